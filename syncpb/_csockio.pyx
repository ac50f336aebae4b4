# cython: language_level=3
"""The OS-level helpers of the compiled sessions' core
(syncpb/_csessioncore.pyx; layer L4.004): plain sockets read and written
from their descriptors, and the sessions' lock.

Theory of operation
-------------------
A plain socket's recv_into, send and sendall cost about twice the system
call itself (arguments parsed, the timeout machinery, an exception built
for every empty read). Where a socket is the standard library's own (its
methods are _socket's, so no TLS wrapper or stand-in: :func:`reads_plain`
and the like say so) the compiled core reads and writes its descriptor
with these instead, with the same results and the same errors
(OSError(errno, strerror), which picks the subclass as the socket module
does). The descriptor is asked for at every read or write, with the GIL
held until the system call (or the GIL let go for it, as the socket
module does), so a socket closed from another thread reads as closed
(-1: EBADF) instead of reaching a descriptor reused since.

The descriptor itself is read from the socket object (:func:`fd_of`: the
field ``fileno()`` returns, checked at import against ``fileno()``), which
saves a method call per read and write.

There is no pure-Python twin: the pure sessions' core calls the socket's
methods, which is what this does without their overhead. The C interface
is declared in _csockio.pxd. (The lock below lives here, not in a module
of its own, because every compiled module costs a process about 100 KiB
of memory.)

The sessions' lock
------------------
A session takes its locks several times per call: the broker lock to
encode the call and again to take in its answer, the state lock to become
the connection's reader and to stop being it, the send lock to write. The
standard library's lock costs about 600 instructions for each
``acquire()`` and ``release()`` pair when called from compiled code (a
method lookup, a call, keyword parsing for ``acquire(blocking, timeout)``),
around 10% of a small blocking call's client side. :class:`Lock` is the
same lock (CPython's own ``PyThread`` lock underneath, the one
``_thread.allocate_lock`` wraps) whose ``take``/``give`` the compiled
sessions' core calls as C functions (``_csockio.pxd``: :func:`take`,
:func:`give`, :func:`attempt` fall back to the methods of any other lock,
such as gevent's ``Semaphore``).

From Python it behaves as ``_thread.allocate_lock()`` does:
``acquire(blocking=True, timeout=-1)``, ``release()``, ``locked()``, a
context manager, the same errors. A wait lets go of the GIL and, like the
standard lock's, is interrupted by signals: their handlers run, and an
exception one raises ends the wait. There is no pure-Python twin to keep in
step: the pure sessions' core uses ``_thread.allocate_lock``, which this
mirrors (tests/test_session_lock.py runs the same checks against both).
"""

import os

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport Py_TYPE, PyTypeObject
from cpython.pythread cimport (NOWAIT_LOCK, PY_LOCK_ACQUIRED, PY_LOCK_INTR, PyLockStatus,
                               PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_free_lock, PyThread_release_lock)
from libc.errno cimport EAGAIN, EINTR, errno
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import _socket

from . import assembly as _assembly

cdef object _plain_recv_into = _socket.socket.recv_into
cdef object _plain_sendall = _socket.socket.sendall
cdef object _plain_send = _socket.socket.send


# The last answer of each check below, for one type: the type, its version
# tag when asked (CPython gives a type a new tag, never reused, whenever it
# or a base changes, and 0 while it has none), and the answer. A check of a
# socket of that type, unchanged since, is two compares.
cdef struct _Seen:
    PyTypeObject* kind
    unsigned int version
    bint answer

cdef _Seen _seen[3]


cdef inline bint _plain(sock, int which, str method, plain) except -1:
    """True when ``sock``'s ``method`` is the standard library socket's (``plain``)."""
    cdef PyTypeObject* kind = Py_TYPE(sock)
    cdef _Seen* seen = &_seen[which]
    if seen.version != 0 and kind == seen.kind and kind.tp_version_tag == seen.version:
        return seen.answer
    answer = getattr(type(sock), method, None) is plain
    seen.kind, seen.version, seen.answer = kind, kind.tp_version_tag, answer
    return answer


cdef bint reads_plain(sock) except -1:
    """``sock.recv_into`` is the standard library socket's."""
    return _plain(sock, 0, "recv_into", _plain_recv_into)


cdef bint sends_plain(sock) except -1:
    """``sock.send`` is the standard library socket's."""
    return _plain(sock, 1, "send", _plain_send)


cdef bint sendalls_plain(sock) except -1:
    """``sock.sendall`` is the standard library socket's."""
    return _plain(sock, 2, "sendall", _plain_sendall)


cdef object timeout_of(sock):
    """``sock.gettimeout()`` of a plain socket (its ``timeout`` attribute:
    the same value, without a method call)."""
    return sock.timeout


# A standard socket's descriptor, read from its object: CPython's socket
# object holds it as the first field after the object header (an int on
# POSIX; -1 once closed, as fileno() returns). The layout is checked once,
# at import, against fileno() on a real socket, open and closed; where it
# does not hold, or for an object that is not a _socket.socket, fd_of()
# calls fileno().
cdef extern from *:
    """
    typedef struct { PyObject_HEAD int sock_fd; } syncpb_socket_head;
    #define SYNCPB_SOCKET_FD(o) (((syncpb_socket_head *)(o))->sock_fd)
    """
    int SYNCPB_SOCKET_FD(object o)

cdef type _socket_type = _socket.socket


cdef bint _fd_field_holds():
    probe = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        held = SYNCPB_SOCKET_FD(probe) == probe.fileno() and probe.fileno() >= 0
    finally:
        probe.close()
    return held and SYNCPB_SOCKET_FD(probe) == probe.fileno() == -1


cdef bint _fd_field = _fd_field_holds()


#: True when fd_of() reads the descriptor from the object (the layout held).
FD_FIELD = _fd_field


cdef int fd_of(sock) except? -2:
    """``sock.fileno()``, read from the object for a standard socket."""
    if _fd_field and isinstance(sock, _socket_type):
        return SYNCPB_SOCKET_FD(sock)
    return sock.fileno()


def fileno_of(sock) -> int:
    """:func:`fd_of` for tests (the same answer as ``sock.fileno()``)."""
    return fd_of(sock)


cdef object _os_error(int code):
    return OSError(code, os.strerror(code))


cdef object _recv_now(sock, char* buf, Py_ssize_t size, bint wait):
    """Read once from ``sock`` (a plain socket) into ``buf``: the bytes
    read (b"" at the end of the stream), or None when it has nothing now
    (a non-blocking socket). With ``wait`` (a blocking socket: no timeout)
    the GIL is let go for the read. Raises OSError as ``recv_into`` would."""
    cdef Py_ssize_t count
    cdef int fd, code
    while True:
        fd = fd_of(sock)
        if wait:
            with nogil:
                count = c_recv(fd, buf, size, 0)
        else:
            count = c_recv(fd, buf, size, 0)
        if count >= 0:
            return PyBytes_FromStringAndSize(buf, count)
        code = errno
        if code == EINTR:
            PyErr_CheckSignals()
            continue
        if code == EAGAIN or code == EWOULDBLOCK:
            return None
        raise _os_error(code)


cdef char* _address(area) except NULL:
    """Where a buffer of :func:`~syncpb.transport.read_buffer` starts. It
    is its thread's for the thread's life and never resized, so the
    address stays good after the view used to find it is let go."""
    cdef Py_buffer view
    PyObject_GetBuffer(area, &view, PyBUF_WRITABLE)
    cdef char* address = <char*>view.buf
    PyBuffer_Release(&view)
    return address


cdef object fill_direct(assembly, sock, Py_ssize_t size, int flags, int nowait, bint wait):
    """``assembly.fill(sock.recv_into, size, flags, nowait)`` for a plain
    socket (``wait``: a blocking one, whose reads that may wait let the GIL
    go): the same reads, results, errors and state (the twin of
    :meth:`syncpb.assembly.Assembly.fill`, line for line), with its loop in
    C, reading the descriptor. A message that arrives in pieces is read a
    piece at a time; this saves the Python steps of each piece (a view
    sliced, a call made, its arguments parsed), which cost about as much as
    the read itself."""
    cdef Py_ssize_t least, room, count, filled, framed, reads = 0, whole
    cdef int fd, code, how
    cdef Py_buffer buffer
    cdef char* base
    if assembly.full:
        return True
    whole, least = _assembly.SIZE, _assembly.MIN_READ
    if least > size:
        least = size
    if assembly._view is None:
        assembly._take_spare()
    PyObject_GetBuffer(assembly._view, &buffer, PyBUF_WRITABLE)
    base = <char*>buffer.buf
    filled, framed = assembly.filled, assembly._framed
    try:
        while True:
            room = whole - filled
            if room < least:  # full: the message goes on as chunks, or ends here
                if framed < filled and assembly._frame(framed, filled):
                    return True
                framed = filled
                assembly.full = True
                return True
            if room > size:
                room = size
            if framed < filled and nowait:
                how = nowait
            elif flags and framed == filled:
                how = flags
            else:
                how = 0
            while True:
                fd = fd_of(sock)
                if wait and not how & MSG_DONTWAIT:
                    with nogil:
                        count = c_recv(fd, base + filled, room, how)
                else:
                    count = c_recv(fd, base + filled, room, how)
                if count >= 0:
                    break
                code = errno
                if code == EINTR:
                    PyErr_CheckSignals()
                    continue
                if code != EAGAIN and code != EWOULDBLOCK:
                    raise _os_error(code)
                # (BlockingIOError, as fill sees it)
                if not filled:  # nothing yet: no buffer is held while waiting
                    PyBuffer_Release(&buffer)
                    base = NULL
                    assembly._give_back()
                    return None
                if framed < filled and (assembly.guess or assembly._frame(framed, filled)):
                    return True
                framed = filled
                return None
            filled += count
            reads += 1
            if count < room:  # short: the socket may be empty (or at its end)
                if framed < filled and (assembly.guess or assembly._frame(framed, filled)):
                    return True  # (at the end of the stream, the next read says so)
                framed = filled
                if not count:
                    return False
    finally:
        if base is not NULL:
            PyBuffer_Release(&buffer)
        assembly.filled, assembly._framed = filled, framed
        assembly.pieces += reads


def fill_for_tests(assembly, sock, Py_ssize_t size, int flags, int nowait, bint wait):
    """:func:`fill_direct` for tests (compared with ``Assembly.fill``)."""
    return fill_direct(assembly, sock, size, flags, nowait, wait)


cdef int _send_all(sock, bytes data) except -1:
    """``sock.sendall(data)`` for a plain blocking socket, the GIL let go
    while it writes."""
    cdef const char* start = PyBytes_AS_STRING(data)
    cdef Py_ssize_t left = PyBytes_GET_SIZE(data), count
    cdef int fd, code
    while left > 0:
        fd = fd_of(sock)
        with nogil:
            count = c_send(fd, start, left, 0)
        if count < 0:
            code = errno
            if code == EINTR:
                PyErr_CheckSignals()
                continue
            raise _os_error(code)
        start += count
        left -= count
    return 0


# -- The sessions' lock (see "The sessions' lock" above)

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
        return f"<{state} syncpb._csockio.Lock object at {id(self):#x}>"
