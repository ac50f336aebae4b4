# cython: language_level=3
"""An OS lock whose acquire and release are C calls from compiled code
(layer L3.0, beside syncpb.waiting and syncpb.osthreads).

Theory of operation
-------------------
A session takes its locks several times per call: the broker lock to
encode the call and again to take in its answer, the state lock to become
the connection's reader and to stop being it, the send lock to write. The
standard library's lock costs about 600 instructions for each
``acquire()`` and ``release()`` pair when called from compiled code (a
method lookup, a call, keyword parsing for ``acquire(blocking, timeout)``),
around 10% of a small blocking call's client side. :class:`Lock` is the
same lock (CPython's own ``PyThread`` lock underneath, the one
``_thread.allocate_lock`` wraps) whose ``take``/``give`` the compiled
sessions' core calls as C functions (``_clock.pxd``: :func:`take`,
:func:`give`, :func:`attempt` fall back to the methods of any other lock,
such as gevent's ``Semaphore``).

From Python it behaves as ``_thread.allocate_lock()`` does:
``acquire(blocking=True, timeout=-1)``, ``release()``, ``locked()``, a
context manager, the same errors. A wait lets go of the GIL and, like the
standard lock's, is interrupted by signals: their handlers run, and an
exception one raises ends the wait. There is no pure-Python twin to keep in
step: the pure sessions' core uses ``_thread.allocate_lock``, which this
mirrors (tests/test_clock.py runs the same checks against both).
"""

from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport (NOWAIT_LOCK, PY_LOCK_ACQUIRED, PY_LOCK_INTR, PyLockStatus,
                               PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_free_lock, PyThread_release_lock)
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cdef extern from "pythread.h":
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock lock, long long microseconds,
                                             int intr_flag) nogil
    long long PY_TIMEOUT_MAX


cdef long long _now_us() noexcept:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <long long>now.tv_sec * 1000000 + now.tv_nsec // 1000


def allocate_lock():
    """A new, unlocked :class:`Lock` (as ``_thread.allocate_lock()``)."""
    return Lock()


cdef class Lock:
    """An OS lock, as ``_thread.allocate_lock()`` makes (see the module's
    theory of operation)."""

    def __cinit__(self):
        self._lock = PyThread_allocate_lock()
        if self._lock is NULL:
            raise MemoryError("cannot allocate a lock")

    def __dealloc__(self):
        if self._lock is not NULL:
            if self._held:
                PyThread_release_lock(self._lock)
            PyThread_free_lock(self._lock)

    cdef int take(self) except -1:
        """``acquire()``: wait as long as it takes (signals still run)."""
        if PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            self._held = True
            return 0
        self._wait(-1)
        return 0

    cdef bint attempt(self) except -1:
        """``acquire(False)``: True when it took the lock."""
        if PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            self._held = True
            return True
        return False

    cdef int give(self) except -1:
        """``release()``."""
        if not self._held:
            raise RuntimeError("release unlocked lock")
        self._held = False
        PyThread_release_lock(self._lock)
        return 0

    cdef bint _wait(self, long long microseconds) except -1:
        """Wait for the lock up to ``microseconds`` (-1: for ever) with the
        GIL let go; a signal's handler runs as it arrives (its exception
        ends the wait), then the wait goes on for the time left."""
        cdef PyLockStatus status
        cdef long long deadline = _now_us() + microseconds if microseconds > 0 else 0
        while True:
            with nogil:
                status = PyThread_acquire_lock_timed(self._lock, microseconds, 1)
            if status == PY_LOCK_ACQUIRED:
                self._held = True
                return True
            if status != PY_LOCK_INTR:
                return False
            PyErr_CheckSignals()
            if microseconds > 0:
                microseconds = max(deadline - _now_us(), 0)

    def acquire(self, blocking=True, timeout=-1):
        """Take the lock: True when taken, False when ``blocking`` is false
        or ``timeout`` (seconds; -1: none) ran out first."""
        cdef bint wait = blocking
        cdef double seconds = timeout
        cdef long long microseconds
        if not wait:
            if seconds != -1:
                raise ValueError("can't specify a timeout for a non-blocking call")
            return self.attempt()
        if seconds < 0 and seconds != -1:
            raise ValueError("timeout value must be positive")
        if seconds == -1:
            microseconds = -1
        else:
            if seconds * 1e6 > PY_TIMEOUT_MAX:
                raise OverflowError("timeout value is too large")
            microseconds = <long long>(seconds * 1e6)
            if <double>microseconds < seconds * 1e6:
                microseconds += 1  # (round up, as the standard lock does)
        if PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            self._held = True
            return True
        if microseconds == 0:
            return False
        return self._wait(microseconds)

    def release(self):
        """Let go of the lock (RuntimeError when it is not held)."""
        self.give()

    def locked(self):
        """True while the lock is held."""
        return self._held

    def __enter__(self):
        self.take()
        return True

    def __exit__(self, *exc_info):
        self.give()

    def __repr__(self):
        state = "locked" if self._held else "unlocked"
        return f"<{state} syncpb._clock.Lock object at {id(self):#x}>"
