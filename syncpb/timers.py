"""Timers for :meth:`syncpb.deferred.Deferred.addTimeout`, with no reactor (layer L3).

Twisted schedules a timeout with ``reactor.callLater``. syncpb has no
reactor, so :func:`default_clock` picks a clock from the caller's own
context, as every wait does (:func:`syncpb.waiting.cooperative_hub`):

* **inside a running gevent hub** -- a :class:`HubClock`: a timer watcher
  of that hub's loop. Nothing else is started; when the timer expires, the
  function runs in a new greenlet of that hub (never in the hub greenlet
  itself, so it may block its greenlet like any other code there);
* **anywhere else** -- :data:`THREAD_CLOCK`, a :class:`ThreadClock`: one
  shared daemon OS thread that sleeps on a real lock until the earliest
  entry of a heap is due. One thread serves every timeout of the process
  (no thread per timeout); it starts at the first use, never keeps the
  process alive at exit, and is started again after a ``fork``. Scheduling
  costs O(log n) and cancelling amortised O(1): cancelled entries are
  dropped lazily, and the heap is compacted once they are the majority. Due
  functions run one after another in that thread, so they must be quick:
  a timeout's ``cancel()`` runs the Deferred's callbacks there, as Twisted
  runs them in its reactor thread.

Any object with Twisted's ``callLater(delay, f, *args, **kwargs)`` returning
something with ``active()`` and ``cancel()`` may be passed instead (for
instance ``twisted.internet.task.Clock``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from .osthreads import OSThread
from .waiting import call_soon_in, cooperative_hub, real

__all__ = ["Clock", "DelayedCall", "ThreadClock", "HubClock", "THREAD_CLOCK", "default_clock"]

_log = logging.getLogger("syncpb")
_allocate_lock = real("_thread", "allocate_lock")
_TIMEOUT_MAX: float = real("_thread", "TIMEOUT_MAX")
_monotonic = time.monotonic

#: Cancelled entries the heap may hold before it is compacted (and only
#: while they are more than half of it).
COMPACT_AT = 1024


class DelayedCall(Protocol):
    """A scheduled call (Twisted's ``IDelayedCall``, the part syncpb uses)."""

    def active(self) -> bool:
        """True until the call has run or was cancelled."""

    def cancel(self) -> None:
        """Do not run the call (it has not run yet)."""


class Clock(Protocol):
    """Schedules calls (Twisted's ``IReactorTime.callLater``)."""

    def callLater(self, delay: float, function: Callable[..., Any],  # noqa: N802
                  *args: Any, **kwargs: Any) -> DelayedCall:
        """Run ``function(*args, **kwargs)`` in ``delay`` seconds."""


def _run_logged(function: Callable[..., Any], args: Tuple[Any, ...],
                kwargs: Dict[str, Any]) -> None:
    """Call a due function; log (never raise) what it raises."""
    try:
        function(*args, **kwargs)
    except Exception:  # noqa: BLE001 (a timer must outlive a bad function)
        _log.exception("error in a timed call to %r", function)


class _Call:
    """What both kinds of scheduled call hold: the function and its state."""

    __slots__ = ("function", "args", "kwargs", "cancelled", "called")

    def __init__(self, function: Callable[..., Any], args: Tuple[Any, ...],
                 kwargs: Dict[str, Any]) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs
        self.cancelled = False
        self.called = False

    def active(self) -> bool:
        """True until the call has run or was cancelled."""
        return not (self.cancelled or self.called)


class ThreadCall(_Call):
    """An entry of a :class:`ThreadClock` (a :class:`DelayedCall`)."""

    __slots__ = ("clock", "time")

    def __init__(self, clock: "ThreadClock", when: float, function: Callable[..., Any],
                 args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        super().__init__(function, args, kwargs)
        self.clock = clock
        self.time = when

    def cancel(self) -> None:
        """Do not run the call; nothing happens if it ran or was cancelled."""
        self.clock._cancel(self)


class ThreadClock:
    """A heap of calls, run at their time by one shared daemon thread."""

    def __init__(self, name: str = "syncpb-timers") -> None:
        self._name = name
        self._heap: List[Tuple[float, int, ThreadCall]] = []
        self._cancelled = 0
        self._order = itertools.count()
        self._reset()

    def _reset(self) -> None:
        """Fresh locks and no thread (at creation, and in a forked child)."""
        self._lock = _allocate_lock()
        self._wake = _allocate_lock()  # held; released to wake the thread early
        self._wake.acquire()
        self._running = False

    def callLater(self, delay: float, function: Callable[..., Any],  # noqa: N802
                  *args: Any, **kwargs: Any) -> ThreadCall:
        """Run ``function(*args, **kwargs)`` in the timer thread after ``delay`` s.

        Returns:
            The :class:`ThreadCall`, to cancel it.
        """
        call = ThreadCall(self, _monotonic() + max(delay, 0.0), function, args, kwargs)
        with self._lock:
            heapq.heappush(self._heap, (call.time, next(self._order), call))
            first = self._heap[0][2] is call
            start = not self._running
            self._running = True
        if start:
            OSThread(self._run, self._name).start()
        elif first:
            self._poke()
        return call

    def pending(self) -> int:
        """How many calls are scheduled and not cancelled."""
        with self._lock:
            return len(self._heap) - self._cancelled

    def _cancel(self, call: ThreadCall) -> None:
        with self._lock:
            if call.cancelled or call.called:
                return
            call.cancelled = True
            call.function, call.args, call.kwargs = _nothing, (), {}  # free them now
            self._cancelled += 1
            if self._cancelled > COMPACT_AT and 2 * self._cancelled > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _poke(self) -> None:
        try:
            self._wake.release()
        except RuntimeError:  # already released: the thread will look anyway
            pass

    def _run(self) -> None:
        """The timer thread: run what is due, sleep until the next entry."""
        while True:
            due: List[ThreadCall] = []
            with self._lock:
                heap = self._heap
                now = _monotonic()
                while heap and heap[0][0] <= now:
                    call = heapq.heappop(heap)[2]
                    if call.cancelled:
                        self._cancelled -= 1
                    else:
                        call.called = True
                        due.append(call)
                delay = heap[0][0] - now if heap else -1.0
            for call in due:
                _run_logged(call.function, call.args, call.kwargs)
            self._wake.acquire(True, min(delay, _TIMEOUT_MAX) if delay >= 0 else -1)

    def _after_fork_in_child(self) -> None:
        """The thread did not survive the fork: start it again if needed."""
        self._reset()
        if self._heap:
            self._running = True
            OSThread(self._run, self._name).start()


def _nothing() -> None:
    """The function of a cancelled call (which is never run)."""


class HubCall(_Call):
    """A call scheduled on a gevent hub's loop (a :class:`DelayedCall`)."""

    __slots__ = ("hub", "timer")

    def __init__(self, hub: Any, delay: float, function: Callable[..., Any],
                 args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        super().__init__(function, args, kwargs)
        self.hub = hub
        self.timer = hub.loop.timer(max(delay, 0.0))
        self.timer.start(self._expired)

    def cancel(self) -> None:
        """Do not run the call; from any thread (the timer is stopped in
        the hub's thread)."""
        if self.cancelled or self.called:
            return
        self.cancelled = True
        try:
            call_soon_in(self.hub, self._close)
        except Exception:  # noqa: BLE001 (that hub is gone, and its timers with it)
            pass

    def _close(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:
            timer.stop()
            timer.close()

    def _expired(self) -> None:
        """In the hub: run the function in a greenlet of its own."""
        self._close()
        if self.cancelled:
            return
        self.called = True
        import gevent  # a hub exists, so gevent is loaded: this only binds the name
        gevent.spawn_raw(_run_logged, self.function, self.args, self.kwargs)


class HubClock:
    """Schedules calls on one gevent hub's loop (see the module's notes)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def callLater(self, delay: float, function: Callable[..., Any],  # noqa: N802
                  *args: Any, **kwargs: Any) -> HubCall:
        """Run ``function(*args, **kwargs)`` in a new greenlet after ``delay`` s.

        Must be called in the hub's thread.

        Returns:
            The :class:`HubCall`, to cancel it (from any thread).
        """
        return HubCall(self.hub, delay, function, args, kwargs)


#: The clock of callers outside a gevent hub: one shared daemon thread.
THREAD_CLOCK = ThreadClock()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=THREAD_CLOCK._after_fork_in_child)


def default_clock() -> Clock:
    """The clock a timeout set here uses: the running gevent hub's loop for
    a greenlet (:class:`HubClock`), else :data:`THREAD_CLOCK`."""
    hub = cooperative_hub()
    return THREAD_CLOCK if hub is None else HubClock(hub)
