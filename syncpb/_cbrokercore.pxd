# cython: language_level=3
"""The C interface of the compiled broker core (syncpb/_cbrokercore.pyx):
its fields (brokercore.CORE_SLOTS) and the C methods the compiled sessions'
core calls directly (syncpb/_csessioncore.pyx), each the body of the
Python method of the same name without the ``_c``."""


cdef class BrokerCore:
    # brokercore.CORE_SLOTS
    cdef public int _state
    cdef public list released
    cdef public list _out
    cdef public list _pending_exports
    cdef public list _chunks
    cdef public object _perspective
    cdef public object _writer
    cdef public object _reader
    cdef public object security
    cdef public object _long_strings
    cdef public object _assembly
    cdef public object _max_incoming
    cdef public bytes _empty_kwargs
    cdef public bytes _message_head
    cdef public bytes _cachemessage_head
    cdef public bytes _answer_head
    cdef public dict _call_targets
    cdef public dict _names
    cdef public dict _exports
    cdef public set _waiting
    cdef public long long _next_request
    cdef public Py_ssize_t _incoming
    cdef public bint _frame_first

    cdef list pieces_c(self)
    cdef list receive_c(self, data)
    cdef object _handle_c(self, bytes buf, Py_ssize_t pos, list events)
    cdef int _answer(self, reader, Py_ssize_t count, list events) except -1
    cdef int _message_c(self, reader, Py_ssize_t count, list events, bint cache) except -1
    cdef object call_c(self, oid, str name, args, kwargs, bint answer_required, perspective,
                       bint cache)
    cdef int answer_c(self, request_id, value, perspective) except -1
