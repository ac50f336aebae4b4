# cython: language_level=3
"""The C interface of syncpb/_creader.pyx: what the compiled broker core
(syncpb/_cbrokercore.pyx) calls on its reader, as C functions. For a
compiled Reader each does in C what the Python method or attribute of the
same name does (``restart``, ``pos`` read and set by ``seek``, ``raw``,
``raw_fields``, ``jelly``, ``imported``); for any other reader (a pure
one a test puts in) it calls that method."""


cdef int reader_restart(reader, bytes buf, Py_ssize_t pos, security,
                        long_strings) except -1
cdef Py_ssize_t reader_pos(reader) except -1
cdef int reader_seek(reader, Py_ssize_t pos) except -1
cdef object reader_raw(reader)
cdef list reader_raw_fields(reader, Py_ssize_t count)
cdef object reader_jelly(reader)
cdef object reader_imported(reader)
