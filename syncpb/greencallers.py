"""How greenlets use a threaded session: they wait, they never read (layer L4).

Theory of operation
-------------------
A caller inside a running gevent hub (:func:`syncpb.waiting.cooperative_hub`)
must block only its greenlet, so it never reads the connection and never
blocks its OS thread (see :mod:`syncpb.threaded` for who reads):

* it writes without blocking: what the socket does not take at once is left
  queued for the connection's background thread (:meth:`GreenCallers._flush_green`);
* it asks the background reader to lead at once and waits on a
  :class:`~syncpb.waiting.Wakeup` (:meth:`GreenCallers._green_wait`), which
  a reading thread sets when the answer arrives;
* a Deferred from ``callRemote`` made in a greenlet fires in that
  greenlet's hub (:class:`_InHub`), where its callbacks run.

So a hub whose thread blocks in plain code holds up only its own greenlets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

from .deferred import Deferred
from .dispatch import before_blocking
from .errors import STALE_REFERENCE, DeadReferenceError
from .failure import Failure
from .waiting import Wakeup, call_soon_in, cooperative_hub

if TYPE_CHECKING:  # pragma: no cover
    from .broker import Broker

__all__ = ["GreenCallers"]


class _GreenSlot:
    """The pending entry of a blocking call made in a greenlet."""

    __slots__ = ("wakeup", "done", "value", "ok")

    def __init__(self) -> None:
        self.wakeup = Wakeup()
        self.done = False
        self.value: Any = None
        self.ok = False

    def callback(self, value: Any) -> None:
        self.value, self.ok, self.done = value, True, True
        self.wakeup.set()

    def errback(self, failure: Any) -> None:
        self.value, self.ok, self.done = failure.value, False, True
        self.wakeup.set()


class _InHub:
    """The pending entry of a ``callRemote`` made in a greenlet: its
    Deferred fires in that greenlet's hub."""

    __slots__ = ("deferred", "hub")

    def __init__(self, deferred: Deferred, hub: Any) -> None:
        self.deferred = deferred
        self.hub = hub

    def callback(self, value: Any) -> None:
        self._fire(self.deferred.callback, value)

    def errback(self, failure: Failure) -> None:
        self._fire(self.deferred.errback, failure)

    def _fire(self, method: Any, value: Any) -> None:
        try:
            call_soon_in(self.hub, method, value)
        except Exception:  # that hub is gone: fire here rather than never
            method(value)


class GreenCallers:
    """The greenlet side of :class:`~syncpb.threaded.ThreadedSession` (a mixin:
    it uses the session's locks, queue, pending table and background thread)."""

    # provided by the session
    _lock: Any
    _state: Any
    _send_mutex: Any
    _queue: Any
    _pending: Dict[int, Any]
    _green_waiting: int
    _leader: Any
    broker: Broker
    closed: bool
    _enqueue_locked: Any
    _outcome: Any
    _poke_background: Any
    _write_queue_nowait: Any

    def _pending_entry(self, d: Deferred) -> Any:
        hub = cooperative_hub()
        return d if hub is None else _InHub(d, hub)

    def _call_blocking_green(self, oid: Any, name: str, args: tuple[Any, ...],
                             kwargs: Dict[str, Any], timeout: Optional[float]) -> Any:
        """:meth:`call_blocking` for a greenlet: blocks only the greenlet."""
        slot = _GreenSlot()
        with self._lock:
            if self.closed:
                raise DeadReferenceError(STALE_REFERENCE)
            request_id = self.broker.call(oid, name, args, kwargs)
            self._pending[request_id] = slot
            self._enqueue_locked()
        before_blocking()
        self._green_wait(slot.wakeup, timeout)
        return self._outcome(slot, request_id, name, timeout)

    def _green_wait(self, wakeup: Wakeup, timeout: Optional[float]) -> bool:
        """Write what is queued, make sure a thread reads, wait on ``wakeup``."""
        with self._state:
            self._green_waiting += 1
            nobody_reads = self._leader is None
        try:
            self._flush_green()
            if nobody_reads:
                self._poke_background(write=False)
            return wakeup.wait(timeout)
        finally:
            with self._state:
                self._green_waiting -= 1

    def _flush_green(self) -> None:
        """Write the queue without blocking the hub's thread; what the socket
        does not take now is left to the background thread."""
        if not self._queue:
            return
        if not self._send_mutex.acquire(False):
            self._poke_background(write=True)  # the writer may have ended its pass
            return
        try:
            self._write_queue_nowait()
        finally:
            self._send_mutex.release()
        if self._queue:
            self._poke_background(write=True)
