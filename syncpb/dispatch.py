"""Run a threaded connection's incoming calls in order without deadlock.

Theory of operation
-------------------
A threaded client must not run the peer's calls on the thread that reads
the socket: a ``remote_`` method that makes a blocking call back would then
wait for an answer that only it could read. So incoming calls go to an
:class:`OrderedDispatcher`: one *active* worker thread takes them from a
queue in arrival order, as Twisted's reactor would run them.

A call that blocks (it waits for a remote answer) would stall the queue.
Every blocking wait in syncpb first calls :func:`before_blocking`; if the
current thread is an active worker, it steps down and another worker (an
idle one, or a new thread) continues the queue. When the blocked call
finishes, its worker becomes idle; at most ``max_idle`` idle workers are
kept. Calls therefore start in order, and a call that waits never stops
the ones behind it.

Workers are real OS threads with real locks, even in a monkey-patched
program (where ``threading.Thread`` would start greenlets of a hub that the
reading thread never runs).
"""

from __future__ import annotations

import collections
import logging
from typing import Callable, Deque, Dict, List, Optional, Tuple

from .waiting import real

__all__ = ["OrderedDispatcher", "before_blocking"]

log = logging.getLogger("syncpb")


_allocate_lock = real("_thread", "allocate_lock")
_start_new_thread = real("_thread", "start_new_thread")


_get_ident = real("_thread", "get_ident")

#: The dispatcher and worker running a job, by the ident of the OS thread
#: that runs it (set and cleared by that thread only: each is one dict
#: operation, atomic under the GIL). Empty, as in any process that runs no
#: dispatched call now, it makes :func:`before_blocking` a length check.
_working: Dict[int, Tuple["OrderedDispatcher", "_Worker"]] = {}


class _Signal:
    """A resettable flag on a real lock (monkey-patching leaves it alone)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _allocate_lock()
        self._lock.acquire()

    def set(self) -> None:
        try:
            self._lock.release()
        except RuntimeError:  # already set
            pass

    def clear(self) -> None:
        self._lock.acquire(False)

    def wait(self) -> None:
        self._lock.acquire()
        self._lock.release()


class _Worker:
    __slots__ = ("wake", "alive")

    def __init__(self) -> None:
        self.wake = _Signal()
        self.alive = _allocate_lock()  # held while the worker's thread runs


class WorkerThread:
    """What :attr:`OrderedDispatcher.threads` lists: a worker's name and liveness."""

    def __init__(self, name: str, worker: _Worker) -> None:
        self.name = name
        self._worker = worker

    def is_alive(self) -> bool:
        return bool(self._worker.alive.locked())

    def join(self, timeout: Optional[float] = None) -> None:
        if self._worker.alive.acquire(True, -1 if timeout is None else max(timeout, 0.0)):
            self._worker.alive.release()


class OrderedDispatcher:
    """Run submitted callables in order on worker threads.

    Args:
        name: thread name prefix, for debugging.
        max_idle: idle workers kept for reuse.
    """

    def __init__(self, name: str = "syncpb-dispatch", max_idle: int = 2) -> None:
        self.name = name
        self.max_idle = max_idle
        self._lock = _allocate_lock()
        self._queue: Deque[Callable[[], None]] = collections.deque()
        self._active: Optional[_Worker] = None
        self._idle: List[_Worker] = []
        self._closed = False
        self._count = 0
        self._threads: List[WorkerThread] = []

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; it runs after every job submitted before it started."""
        with self._lock:
            if self._closed:
                return
            self._queue.append(job)
            if self._active is None:
                self._activate_locked()
            else:
                self._active.wake.set()

    def close(self) -> None:
        """Drop queued jobs and let the workers end."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            idle, self._idle = self._idle, []
            if self._active is not None:
                idle.append(self._active)  # it may be waiting for work: let it end too
        for worker in idle:
            worker.wake.set()

    def _activate_locked(self) -> None:
        if self._idle:
            worker = self._idle.pop()
            self._active = worker
            worker.wake.set()
            return
        worker = _Worker()
        self._active = worker
        self._count += 1
        worker.alive.acquire()
        self._threads.append(WorkerThread(f"{self.name}-{self._count}", worker))
        _start_new_thread(self._run, (worker,))

    def _step_down(self, worker: _Worker) -> None:
        """``worker`` is about to block: let another worker take the queue."""
        with self._lock:
            if self._active is worker:
                self._active = None
                if self._queue:
                    self._activate_locked()

    @property
    def threads(self) -> List[WorkerThread]:
        """The worker threads started so far (for tests and debugging)."""
        return list(self._threads)

    def _run(self, worker: _Worker) -> None:
        try:
            while True:
                job = self._next_job(worker)
                if job is None:
                    return
                ident = _get_ident()
                _working[ident] = (self, worker)
                try:
                    job()
                except BaseException:  # a job must never kill its worker
                    log.exception("unexpected error in a dispatched call")
                finally:
                    _working.pop(ident, None)
        finally:
            worker.alive.release()

    def _next_job(self, worker: _Worker) -> Optional[Callable[[], None]]:
        while True:
            with self._lock:
                if self._closed:
                    return None
                if self._active is None:
                    self._active = worker
                if self._active is worker:
                    if self._queue:
                        return self._queue.popleft()
                elif len(self._idle) >= self.max_idle:
                    return None
                else:
                    self._idle.append(worker)
                worker.wake.clear()
            worker.wake.wait()


def before_blocking() -> None:
    """Call before a blocking wait: an active dispatch worker hands its queue over."""
    if not _working:
        return
    current = _working.get(_get_ident())
    if current is not None:
        dispatcher, worker = current
        dispatcher._step_down(worker)
