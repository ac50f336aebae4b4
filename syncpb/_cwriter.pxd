# cython: language_level=3
"""The C interface of syncpb/_cwriter.pyx: what the compiled broker core
(syncpb/_cbrokercore.pyx) calls on its writer, as C functions. For a
compiled Writer each does in C what the Python method or attribute of the
same name does (``write_items``, ``int_token``, ``wrote_large`` read and
cleared by ``clear_large``); for any other writer (a pure one a test puts
in) it calls that method."""


cdef int writer_write_items(writer, head, items, out) except -1
cdef object writer_int_token(writer, n)
cdef bint writer_wrote_large(writer) except -1
cdef int writer_clear_large(writer) except -1
