# cython: language_level=3
"""Plain sockets read and written from their descriptors, for the
compiled sessions' core (syncpb/_csessioncore.pyx; layer L4.004).

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
is declared in _csockio.pxd.
"""

import os

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport Py_TYPE, PyTypeObject
from libc.errno cimport EAGAIN, EINTR, errno

import _socket

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


cdef class _DirectRecv:
    """A plain socket's ``recv_into``, read straight from its descriptor:
    what the compiled core hands :meth:`~syncpb.assembly.Assembly.fill`.
    The same arguments, results and errors (a non-blocking read that finds
    nothing raises BlockingIOError). With ``wait`` (a blocking socket), a
    read that may wait lets the GIL go."""

    def __cinit__(self, sock, bint wait):
        self.sock = sock
        self.wait = wait

    def __call__(self, buffer, Py_ssize_t nbytes=0, int flags=0):
        cdef Py_buffer view
        cdef Py_ssize_t count, size
        cdef int fd, code
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            if nbytes < 0 or nbytes > view.len:
                raise ValueError("buffer too small for requested bytes")
            size = nbytes if nbytes else view.len
            while True:
                fd = fd_of(self.sock)
                if self.wait and not flags & MSG_DONTWAIT:
                    with nogil:
                        count = c_recv(fd, view.buf, size, flags)
                else:
                    count = c_recv(fd, view.buf, size, flags)
                if count >= 0:
                    return count
                code = errno
                if code != EINTR:
                    raise _os_error(code)  # (EAGAIN: BlockingIOError)
                PyErr_CheckSignals()
        finally:
            PyBuffer_Release(&view)


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
