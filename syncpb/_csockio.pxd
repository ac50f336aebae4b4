# cython: language_level=3
"""The C interface of syncpb/_csockio.pyx (see its theory of operation)."""

from cpython.pythread cimport PyThread_type_lock


cdef extern from "errno.h":
    int EWOULDBLOCK

cdef extern from "sys/socket.h" nogil:
    Py_ssize_t c_recv "recv" (int fd, void *buf, size_t n, int flags)
    Py_ssize_t c_send "send" (int fd, const void *buf, size_t n, int flags)
    int MSG_DONTWAIT

cdef bint reads_plain(sock) except -1
cdef bint sends_plain(sock) except -1
cdef bint sendalls_plain(sock) except -1
cdef object timeout_of(sock)
cdef int fd_of(sock) except? -2
cdef object _os_error(int code)
cdef object _recv_now(sock, char* buf, Py_ssize_t size, bint wait)
cdef char* _address(area) except NULL
cdef int _send_all(sock, bytes data) except -1
cdef object fill_direct(assembly, sock, Py_ssize_t size, int flags, int nowait, bint wait)


cdef class Lock:
    cdef PyThread_type_lock _lock
    cdef bint _held
    cdef object __weakref__

    cdef int take(self) except -1
    cdef bint attempt(self) except -1
    cdef int give(self) except -1
    cdef bint _wait(self, long long microseconds) except -1


# acquire(), acquire(False) and release() of any lock: a Lock's as C calls, any other's
# (gevent's Semaphore, a _thread lock) through its methods.
cdef inline int take(lock) except -1:
    if type(lock) is Lock:
        return (<Lock>lock).take()
    lock.acquire()
    return 0


cdef inline bint attempt(lock) except -1:
    if type(lock) is Lock:
        return (<Lock>lock).attempt()
    return lock.acquire(False)


cdef inline int give(lock) except -1:
    if type(lock) is Lock:
        return (<Lock>lock).give()
    lock.release()
    return 0
