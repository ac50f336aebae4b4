# cython: language_level=3
"""The C interface of syncpb/_clock.pyx (see its theory of operation)."""

from cpython.pythread cimport PyThread_type_lock


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
