"""The thread-pool bridge: blocking work off the hub, results back to the caller.

Theory of operation
-------------------
A :class:`ThreadPool` runs callables on real OS threads (taken from before
any monkey-patching, so a C database driver or a CPU-bound function never
holds a gevent hub) and hands each result back to the context that asked:

* :meth:`ThreadPool.run` blocks exactly its caller (the calling greenlet
  inside a running gevent hub, the calling thread otherwise) through
  :class:`syncpb.waiting.Wakeup`;
* :meth:`ThreadPool.submit` returns a :class:`syncpb.Deferred`, fired in the
  hub of the greenlet that submitted (so callbacks run where the caller
  runs), or in the worker thread for a plain-thread caller.

Callers may be plain threads and greenlets of any number of hubs at once.
That is why this is not ``gevent.threadpool.ThreadPool`` (whose ``spawn``
may only be called from the one thread that owns its hub, and which delivers
results through that hub alone) nor ``concurrent.futures.ThreadPoolExecutor``
(whose worker threads and futures become greenlets and gevent locks when the
program is monkey-patched). The queue is CPython's C ``SimpleQueue``, which
monkey-patching does not touch.

The pool is bounded: at most ``size`` threads (started on demand) and at
most ``max_queue`` callables waiting for one. Past that, :meth:`submit`
raises :class:`~syncpb.errors.PoolSaturated` at once, or waits up to
``queue_timeout`` seconds for room. :meth:`stop` refuses new work with
:class:`~syncpb.errors.PoolClosed`, lets queued and running work finish up
to a timeout, then ends the threads as they become free.

A callable run by a pool's own worker that uses the same pool runs inline
(a nested :meth:`run` could otherwise wait for a thread it occupies).
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from syncpb.deferred import Deferred
from syncpb.errors import PoolClosed, PoolSaturated
from syncpb.failure import Failure
from syncpb.osthreads import OSThread
from syncpb.session import BLOCKING_ATTRIBUTE, MARKS
from syncpb.waiting import Wakeup, call_soon_in, cooperative_hub, real

__all__ = ["ThreadPool", "default_pool", "set_default_pool", "deferToThread",
           "run_in_thread", "blocking"]

log = logging.getLogger("syncpb")

_allocate_lock = real("_thread", "allocate_lock")
_SimpleQueue = real("_queue", "SimpleQueue")
_thread_local = real("_thread", "_local")

T = TypeVar("T")
_Deliver = Callable[[bool, Any], None]
_Task = Tuple[Callable[..., Any], Tuple[Any, ...], Dict[str, Any], _Deliver]



def default_size() -> int:
    """``concurrent.futures``' default for I/O-bound work: CPUs + 4, at most 32."""
    return min(32, (os.cpu_count() or 1) + 4)


class _Local(_thread_local):  # type: ignore[misc, valid-type]
    pool: Optional["ThreadPool"] = None


_local = _Local()


class ThreadPool:
    """A bounded pool of OS threads usable from threads and greenlets alike.

    Args:
        size: most threads running at once (default: CPUs + 4, at most 32,
            as ``concurrent.futures`` sizes pools for I/O).
        max_queue: most callables waiting for a free thread.
        queue_timeout: seconds :meth:`submit`/:meth:`run` wait for room in
            a full queue before raising PoolSaturated (0: raise at once).
        name: prefix of the threads' names.
    """

    def __init__(self, size: Optional[int] = None, *, max_queue: int = 256,
                 queue_timeout: float = 0.0, name: str = "syncpb-pool") -> None:
        size = default_size() if size is None else size
        if size < 1:
            raise ValueError(f"a pool needs at least one thread, not {size}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, not {max_queue}")
        self.size = size
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.name = name
        self._lock = _allocate_lock()
        self._queue = _SimpleQueue()
        self._queued = 0      # submitted, not yet taken by a thread
        self._running = 0     # taken by a thread, not finished
        self._delivering = 0  # finished, the result not yet handed to its caller
        self._idle = 0        # threads waiting for work
        self._threads: List[OSThread] = []
        self._room_waiters: List[Wakeup] = []
        self._drained: List[Wakeup] = []
        self._closed = False

    # ------------------------------------------------------------ state

    @property
    def closed(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._closed

    @property
    def queued(self) -> int:
        """Callables waiting for a thread."""
        return self._queued

    @property
    def running(self) -> int:
        """Callables running now."""
        return self._running

    @property
    def threads(self) -> int:
        """Threads started and not yet ended."""
        return sum(1 for thread in self._threads if thread.is_alive())

    def __repr__(self) -> str:
        state = "stopped" if self._closed else f"{self._running} running, {self._queued} queued"
        return f"<ThreadPool {self.name} size={self.size} {state}>"

    # ------------------------------------------------------------ submitting

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        """Run ``function(*args, **kwargs)`` in the pool; a Deferred of its result.

        The Deferred fires in the hub of the greenlet that submitted, or
        in the worker thread when a plain thread submitted.

        Raises:
            PoolSaturated: the queue is full (after ``queue_timeout``).
            PoolClosed: the pool was stopped.
        """
        d = Deferred()
        if _local.pool is self:  # a worker of ours: run inline, never wait for ourselves
            try:
                d.callback(function(*args, **kwargs))
            except BaseException:
                d.errback(Failure())
            return d
        hub = cooperative_hub()

        def fire(ok: bool, value: Any) -> None:
            call_soon_in(hub, self._fire, d, ok, value)

        self._put((function, args, kwargs, fire))
        return d

    def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function(*args, **kwargs)`` in the pool and return its result.

        Blocks only the caller: the calling greenlet inside a running gevent
        hub, the calling thread otherwise.

        Raises:
            whatever ``function`` raised; PoolSaturated; PoolClosed.
        """
        if _local.pool is self:
            return function(*args, **kwargs)
        wakeup = Wakeup()
        box: List[Any] = []

        def deliver(ok: bool, value: Any) -> None:
            box.append((ok, value))
            self._delivered()  # the result is the caller's now
            wakeup.set()

        self._put((function, args, kwargs, deliver))
        wakeup.wait()
        ok, value = box[0]
        if ok:
            return value  # type: ignore[no-any-return]
        value.raiseException()
        raise AssertionError("unreachable")

    def _put(self, task: _Task) -> None:
        deadline = None
        waited: Optional[Wakeup] = None
        while True:
            with self._lock:
                if waited is not None and waited in self._room_waiters:
                    self._room_waiters.remove(waited)
                if self._closed:
                    raise PoolClosed(f"thread pool {self.name} is stopped")
                if self._queued + self._running < self.size + self.max_queue:
                    self._queued += 1
                    start_thread = self._idle < self._queued and len(self._threads) < self.size
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.queue_timeout
                if now >= deadline:
                    raise PoolSaturated(
                        f"thread pool {self.name} is saturated: {self._running} running, "
                        f"{self._queued} queued (size={self.size}, max_queue={self.max_queue})")
                waited = Wakeup()
                self._room_waiters.append(waited)
            waited.wait(deadline - now)  # woken when a callable finishes, or by stop()
        if start_thread:
            self._start_thread()
        self._queue.put(task)

    def _start_thread(self) -> None:
        with self._lock:
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            if len(self._threads) >= self.size:
                return
            thread = OSThread(self._work, f"{self.name}-{len(self._threads) + 1}")
            self._threads.append(thread)
        thread.start()

    # ------------------------------------------------------------ the workers

    def _work(self) -> None:
        _local.pool = self
        queue = self._queue
        while True:
            with self._lock:
                self._idle += 1
            task = queue.get()
            with self._lock:
                self._idle -= 1
                if task is None:
                    return
                self._queued -= 1
                self._running += 1
            function, args, kwargs, deliver = task
            try:
                outcome: Tuple[bool, Any] = (True, function(*args, **kwargs))
            except BaseException:
                outcome = (False, Failure())
            del function, args, kwargs, task
            with self._lock:  # room for one more before the caller hears back
                self._running -= 1
                self._delivering += 1
                room = self._room_waiters.pop(0) if self._room_waiters else None
            if room is not None:
                room.set()
            try:
                deliver(*outcome)  # calls _delivered() once the caller has it
            except Exception:
                log.exception("could not deliver a thread-pool result")
                self._delivered()
            del outcome, deliver

    def _fire(self, d: Deferred, ok: bool, value: Any) -> None:
        """Fire a :meth:`submit` Deferred (in the submitter's hub)."""
        try:
            if ok:
                d.callback(value)
            else:
                d.errback(value)
        except Exception:  # e.g. the caller fired it already (AlreadyCalledError)
            log.exception("could not deliver a thread-pool result")
        finally:
            self._delivered()

    def _delivered(self) -> None:
        """A result reached its caller; :meth:`stop` may be waiting for the last."""
        with self._lock:
            self._delivering -= 1
            drained = self._finished_locked()
        for wakeup in drained:
            wakeup.set()

    def _finished_locked(self) -> List[Wakeup]:
        if self._queued or self._running or self._delivering:
            return []
        drained, self._drained = self._drained, []
        return drained

    # ------------------------------------------------------------ stopping

    def stop(self, timeout: Optional[float] = 10.0) -> bool:
        """Refuse new work, let queued and running work finish (up to
        ``timeout`` seconds), then end the threads as they become free.

        Returns:
            True when all work finished within ``timeout``.
        """
        wakeup = Wakeup()
        with self._lock:
            already = self._closed
            self._closed = True
            room, self._room_waiters = self._room_waiters, []
            self._drained.append(wakeup)
            idle_now = not (self._queued or self._running or self._delivering)
        for waiter in room:
            waiter.set()  # they see the pool closed
        drained = idle_now or wakeup.wait(timeout)
        if not already:
            for _ in range(self.size):
                self._queue.put(None)  # each thread ends when it takes one
        if not drained:
            log.warning("thread pool %s stopped with work still running", self.name)
        return bool(drained)

    # the names of concurrent.futures, for code that expects an executor
    def shutdown(self, wait: bool = True) -> None:
        """``concurrent.futures``-style stop (waits for ever with ``wait``)."""
        self.stop(None if wait else 0)


# ---------------------------------------------------------------- the default pool

_default: Optional[ThreadPool] = None
_default_lock = _allocate_lock()


def default_pool() -> ThreadPool:
    """The process-wide pool, made on first use and stopped at interpreter exit."""
    global _default
    pool = _default
    if pool is not None and not pool.closed:
        return pool
    with _default_lock:
        if _default is None or _default.closed:
            _default = ThreadPool(name="syncpb-default-pool")
            atexit.register(_default.stop, 5.0)
        return _default


def set_default_pool(pool: Optional[ThreadPool]) -> Optional[ThreadPool]:
    """Replace the process-wide pool (None: make a new one on next use);
    returns the previous one, which keeps running until you stop it."""
    global _default
    with _default_lock:
        previous, _default = _default, pool
    return previous


def deferToThread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:  # noqa: N802
    """Twisted's ``deferToThread``: run in the default pool; a Deferred of the result."""
    return default_pool().submit(function, *args, **kwargs)


def run_in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run in the default pool and return the result, blocking only the caller."""
    return default_pool().run(function, *args, **kwargs)


def blocking(method: Callable[..., T]) -> Callable[..., T]:
    """Mark a ``remote_``/``perspective_``/``view_`` method to run in the
    server's thread pool (its own, or the default one) instead of the hub.

    The method itself is returned, only marked: called directly (not
    through PB) it runs as it is.
    """
    setattr(method, BLOCKING_ATTRIBUTE, True)
    MARKS.used = True
    return method
