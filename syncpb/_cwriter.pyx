# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled Jelly writer: :class:`syncpb.jellywriter.Writer` in C (layer L1).

Theory of operation
-------------------
The pure :class:`syncpb.jellywriter.Writer` stays the reference: for the
same values this class appends the same bytes (joined) to the caller's
list of pieces, raises the same exception classes with the same messages
at the same points, keeps the same counters (reference numbers,
:attr:`Writer.wrote_large`) and offers the same methods to the broker and
its context hooks (``jelly``, ``write``, ``write_items``, ``value``,
``word``, ``int_token``, ``list_header``, ``begin_shared``, ``shared``,
``cache_form``, ``copy_form``). What differs is how the bytes are made:

* Tokens go into one growable buffer until it becomes a piece of the
  caller's list. It starts in a scratch area of ``FIRST_BUFFER`` bytes the
  writer keeps (a piece that fits is copied out into a bytes object of
  its exact size: one small allocation per message); a piece that
  outgrows it moves into a bytes object this writer owns and grows in
  place, then shrinks to its length, uncopied, when it becomes the piece.
  A message of small values is therefore one piece,
  where the pure writer makes one piece per token. A string payload of at
  least ``_LARGE_PIECE`` bytes is still a piece of its own (a ``bytes``
  value is appended as the very object, never copied; a long ``str`` as
  its UTF-8 bytes) and sets :attr:`Writer.wrote_large`, so the session
  can hand it to ``sendmsg`` untouched.
* Values are dispatched on their exact type by pointer compares, ``str``
  is encoded to UTF-8 through the C API (an ASCII string is copied straight
  from its own storage), ints that fit in 64 bits and floats are encoded in
  C; the vocabulary of the ``pb`` dialect is looked up in a small C table.
* Containers take part in reference numbering through an open-addressing
  hash table keyed by object address (a strong reference keeps each one
  alive until the serialisation ends, as the pure writer's dict does).
  Twisted numbers a container on its *second* sighting and wraps its first
  occurrence as ``['reference', n, ...]``. Instead of reserving an empty
  piece, each container records where it starts: the index of the piece
  it is in (the buffer becomes piece ``len(out)`` when flushed) and its
  offset in that piece, not counting reference headers. A second sighting
  only notes the header, under its piece. The headers are put in when
  their piece leaves the writer, all of a piece's in one pass sorted by
  offset (two containers starting at the same offset keep their nesting
  order: the outer one was recorded first): when the buffer is flushed,
  and, for a header whose piece had already been flushed, when the
  outermost call returns (the piece is rebuilt once, past the headers it
  already has). A value with many shared containers (say a list of
  records and a dict indexing the same records) so costs one copy per
  piece, not one move of the buffer's tail per header.
* Nothing outside this class ever sees a half-filled buffer: the buffer is
  flushed to the caller's list before a context hook (``ctx.jelly_object``,
  which may append pieces of its own and call back in) runs, and every
  public method flushes before it returns, also when it raises (what was
  written stays in the list, as with the pure writer).
* Nesting is bounded by the interpreter's recursion limit, as in the pure
  writer: each container level enters ``Py_EnterRecursiveCall`` as many
  times as the pure writer has Python frames per level (two for lists and
  dicts, three for tuples and sets), so both refuse about the same depth,
  and :meth:`Writer.write` reports it as the same :class:`BananaError`.

Rare kinds are not duplicated here: ``Decimal``, dates and times and
``Unpersistable`` go through the pure writer's own functions (run with
this writer as ``self`` and a scratch list that is copied into the
buffer), big ints through :func:`syncpb.banana.encode_int`, and PB objects
(references, Copyables, Cacheables) through the context hook exactly as in
the pure writer. Limits that are not plain ints are compared the Python
way.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy, memset

from . import jellywriter as _pure
from .banana import VOCABULARY, encode_int, too_large
from .errors import BananaError

__all__ = ["Writer"]

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    const Py_ssize_t PY_SSIZE_T_MIN
    int Py_EnterRecursiveCall(const char *where)  # nonzero (RecursionError set) when too deep
    void Py_LeaveRecursiveCall()
    bint PyUnicode_IS_COMPACT_ASCII(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    void *PyUnicode_DATA(object text)
    bytes PyUnicode_AsUTF8String(object text)
    double PyFloat_AS_DOUBLE(object number)
    long long PyLong_AsLongLongAndOverflow(object number, int *overflow) except? -1
    int _PyBytes_Resize(PyObject **piece, Py_ssize_t size)  # -1 (and freed) on failure

cdef enum:
    LIST = 0x80
    INT = 0x81
    STRING = 0x82
    NEG = 0x83
    FLOAT = 0x84
    LONGINT = 0x85
    LONGNEG = 0x86
    VOCAB = 0x87
    #: longest token prefix of a C long long plus its type byte
    MAX_INT_TOKEN = 11
    #: a first buffer's size; it doubles as needed
    FIRST_BUFFER = 512
    #: a reference table at most this large is kept for the next message
    KEEP_TABLE = 64

#: A piece at least this long must not be copied into a joined message.
cdef Py_ssize_t LARGE_PIECE = _pure._LARGE_PIECE
cdef dict _DISPATCH = _pure._DISPATCH
cdef object _string_token = _pure._string_token
cdef object _PyWriter = _pure.Writer
cdef tuple _SMALL_INTS = _pure._SMALL_INTS
cdef object _SIZE_LIMIT = _pure.SIZE_LIMIT
cdef object _PREFIX_LIMIT = _pure.PREFIX_LIMIT
cdef str _DEPTH = "value nested too deeply to send"

# -- the vocabulary of the pb dialect, by length then first byte

cdef enum:
    MAX_WORDS = 64
    MAX_WORD = 32

cdef char _words[MAX_WORDS][MAX_WORD]
cdef int _word_index[MAX_WORDS]
cdef int _by_length_start[MAX_WORD + 1]
cdef int _by_length_end[MAX_WORD + 1]
cdef Py_ssize_t _shortest = MAX_WORD
cdef Py_ssize_t _longest = 0


cdef void _load_vocabulary() except *:
    global _shortest, _longest
    cdef int count = 0
    cdef Py_ssize_t size
    cdef bytes word
    entries = sorted((len(w), i, w) for i, w in enumerate(VOCABULARY) if i)
    if len(entries) > MAX_WORDS:
        raise ImportError("the pb vocabulary does not fit the compiled table")
    memset(_by_length_start, 0, sizeof(_by_length_start))
    memset(_by_length_end, 0, sizeof(_by_length_end))
    for size, index, word in entries:
        if size >= MAX_WORD or size == 0:
            raise ImportError("a pb vocabulary word does not fit the compiled table")
        if _by_length_end[size] == 0:
            _by_length_start[size] = count
        memcpy(_words[count], PyBytes_AS_STRING(word), size)
        _word_index[count] = index
        count += 1
        _by_length_end[size] = count
        _shortest = min(_shortest, size)
        _longest = max(_longest, size)


_load_vocabulary()


cdef inline int _vocab_index(const char *data, Py_ssize_t size) noexcept:
    """The vocabulary index of ``data`` (0 when it is no vocabulary word)."""
    cdef int i
    if size < _shortest or size > _longest:
        return 0
    for i in range(_by_length_start[size], _by_length_end[size]):
        if _words[i][0] == data[0] and memcmp(_words[i], data, size) == 0:
            return _word_index[i]
    return 0


cdef inline int _prefix_size(uint64_t n) noexcept:
    """How many base-128 digits ``n`` (> 0) has."""
    cdef int count = 0
    while n:
        count += 1
        n >>= 7
    return count


cdef inline Py_ssize_t _put_prefix(char *at, uint64_t n) noexcept:
    """Write ``n`` as prefix bytes at ``at``; return how many."""
    cdef Py_ssize_t count = 0
    if n == 0:
        at[0] = 0
        return 1
    while n:
        at[count] = <char>(n & 0x7F)
        n >>= 7
        count += 1
    return count


cdef inline int _deeper(int frames) except -1:
    """Count ``frames`` more levels against the recursion limit (as many as
    the pure writer's Python frames for one level of this container)."""
    cdef int i, j
    for i in range(frames):
        if Py_EnterRecursiveCall(" while encoding a value"):
            for j in range(i):
                Py_LeaveRecursiveCall()
            return -1
    return 0


cdef inline void _shallower(int frames) noexcept:
    cdef int i
    for i in range(frames):
        Py_LeaveRecursiveCall()


cdef struct Shared:
    PyObject *obj  # a strong reference until the serialisation ends
    Py_ssize_t piece  # index in the caller's list of the piece it starts in
    Py_ssize_t offset  # where in that piece, not counting inserted headers
    long long ref  # its reference number, 0 until its second sighting


cdef inline size_t _hash(PyObject *obj) noexcept:
    cdef size_t h = <size_t>obj
    h = (h >> 4) * <size_t>0x9E3779B97F4A7C15
    return h ^ (h >> 29)


@cython.final
cdef class Writer:
    """Encoder of Python values for one connection (one dialect, one set of
    limits); see :class:`syncpb.jellywriter.Writer` for the interface."""

    cdef public object ctx
    cdef readonly object vocab
    cdef readonly object size_limit
    cdef readonly object prefix_limit
    #: Set when a piece of at least _LARGE_PIECE bytes was written; the
    #: broker clears it before a message and joins small messages only.
    cdef public bint wrote_large

    cdef bint _vocab
    cdef bint _plain_size  # size_limit is an int that fits Py_ssize_t
    cdef bint _plain_prefix  # prefix_limit is an int that fits long long
    cdef Py_ssize_t _size_limit
    cdef long long _prefix_limit
    cdef bytes _unicode, _none, _true, _false, _deref, _ref
    cdef bytes _list_head, _tuple_head, _dict_head, _set_head, _frozenset_head
    cdef dict _heads

    # the buffer: a bytes object of _cap bytes, _len of them written
    cdef object _out  # the caller's list being written to, None between calls
    cdef PyObject *_piece  # the bytes object _buf is in, or NULL (the scratch area, or none)
    cdef char *_scratch  # FIRST_BUFFER bytes, made at the first write
    cdef char *_buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap

    # reference numbering of one serialisation
    cdef Shared *_shared
    cdef Py_ssize_t _count
    cdef Py_ssize_t _room
    cdef Py_ssize_t *_table  # index + 1 into _shared, 0 for a free slot
    cdef size_t _mask
    cdef long long _next_ref
    cdef dict _inserts  # piece index -> [(offset, order, header)] not yet put in
    cdef dict _applied  # piece index -> [(offset, order, size)] of headers put in
    cdef bint _late  # a header waits for a piece already flushed

    def __init__(self, ctx=None, vocab=True, size_limit=_SIZE_LIMIT,
                 prefix_limit=_PREFIX_LIMIT):
        self.ctx = ctx
        self.vocab = vocab
        self.size_limit = size_limit
        self.prefix_limit = prefix_limit
        self.wrote_large = False
        self._vocab = bool(vocab)
        self._plain_size = type(size_limit) is int
        if self._plain_size:
            self._size_limit = (PY_SSIZE_T_MAX if size_limit > PY_SSIZE_T_MAX else
                                PY_SSIZE_T_MIN if size_limit < PY_SSIZE_T_MIN else size_limit)
        self._plain_prefix = type(prefix_limit) is int
        if self._plain_prefix:
            self._prefix_limit = (1000 if prefix_limit > 1000 else
                                  -1 if prefix_limit < -1 else prefix_limit)
        words = _pure._WORDS[self._vocab]
        self._unicode = words.unicode
        self._none = words.none
        self._true = words.true
        self._false = words.false
        self._heads = words.heads
        self._list_head = words.heads[b"list"]
        self._tuple_head = words.heads[b"tuple"]
        self._dict_head = words.heads[b"dictionary"]
        self._set_head = words.heads[b"set"]
        self._frozenset_head = words.heads[b"frozenset"]
        self._deref = words.deref
        self._ref = words.ref
        self._out = None
        self._next_ref = 0

    def __dealloc__(self):
        self._forget_shared()
        PyMem_Free(self._shared)
        PyMem_Free(self._table)
        Py_XDECREF(self._piece)
        self._piece = NULL
        PyMem_Free(self._scratch)
        self._scratch = NULL

    # -- entry points

    def jelly(self, obj):
        """Return the bytes of one serialisation of ``obj``."""
        out = []
        self.write(obj, out)
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def write(self, obj, out):
        """Append one serialisation of ``obj`` (fresh reference numbering).

        Raises:
            BananaError: a limit is broken or the nesting is too deep.
            TypeError: the value has no Jelly form.
        """
        kind = type(obj)
        if (kind is str or kind is int or kind is bytes or kind is float or obj is None
                or kind is bool):  # nothing to share or number: no table needed
            previous = self._enter(out)
            try:
                self._value(obj)
            finally:
                self._leave(previous)
            return
        if self._count:
            self._forget_shared()
        self._next_ref = 0
        previous = self._enter(out)
        try:
            self._value(obj)
        except RecursionError:
            raise BananaError(_DEPTH) from None
        finally:
            self._leave(previous)
            if self._count:
                self._forget_shared()  # drop the objects it kept alive

    def write_items(self, head, items, out):
        """Append a fresh serialisation of a container no item can refer to
        (call arguments): no reference slot is reserved for the container."""
        self._write_items(head, items, out)

    cdef int _write_items(self, head, items, out) except -1:
        if self._count:
            self._forget_shared()
        self._next_ref = 0
        previous = self._enter(out)
        try:
            count = len(items) + 1
            self._put_list_header(count, self._heads[head])
            if type(items) is tuple:
                for item in <tuple>items:
                    self._value(item)
            elif type(items) is list:
                for item in <list>items:
                    self._value(item)
            else:
                for item in items:
                    self._value(item)
        except RecursionError:
            raise BananaError(_DEPTH) from None
        finally:
            self._leave(previous)
            if self._count:
                self._forget_shared()
        return 0

    def word(self, word):
        """Token of a bare protocol string in this dialect."""
        cdef char head[MAX_INT_TOKEN]
        cdef Py_ssize_t size, used
        cdef int index
        if type(word) is not bytes:
            return _string_token(word, self.vocab, self.size_limit)
        size = PyBytes_GET_SIZE(word)
        if self._vocab:
            index = _vocab_index(PyBytes_AS_STRING(word), size)
            if index:
                head[0] = <char>index
                head[1] = <char>VOCAB
                return PyBytes_FromStringAndSize(head, 2)
        self._check_string(size)
        used = _put_prefix(head, <uint64_t>size)
        head[used] = <char>STRING
        return PyBytes_FromStringAndSize(head, used + 1) + word

    def int_token(self, n):
        """Token of a bare integer."""
        return self._int_token(n)

    cdef object _int_token(self, n):
        cdef char token[MAX_INT_TOKEN]
        cdef int overflow = 0
        cdef long long value
        if type(n) is not int:
            return _PyWriter.int_token(self, n)
        value = PyLong_AsLongLongAndOverflow(n, &overflow)
        if overflow:
            return encode_int(n, self.prefix_limit)
        if 0 <= value < 128:
            return _SMALL_INTS[value]
        return PyBytes_FromStringAndSize(token, self._int_into(token, value))

    def value(self, obj, out):
        """Append the Jelly form of ``obj`` inside the current serialisation."""
        previous = self._enter(out)
        try:
            self._value(obj)
        finally:
            self._leave(previous)

    def begin_shared(self, obj, out):
        """Start a value that takes part in reference numbering.

        Returns False (after writing a ``dereference``) when ``obj`` was
        already written in this serialisation; otherwise records where it
        starts, for a later ``reference`` header, and returns True.
        """
        previous = self._enter(out)
        try:
            return bool(self._begin_shared(obj))
        finally:
            self._leave(previous)

    def list_header(self, count):
        """Header of a Banana list of ``count`` items.

        Raises:
            BananaError: ``count`` exceeds the size limit.
        """
        return _PyWriter.list_header(self, count)

    def shared(self, obj):
        """Was ``obj`` already written in this serialisation?"""
        return self._find(<PyObject *>obj) >= 0

    def cache_form(self, tag, cid, state, obj, out):
        """Write ``[tag, cache id, state]``, a Cacheable's first send."""
        previous = self._enter(out)
        try:
            if self._begin_shared(obj):
                self._put_bytes(b"\x03\x80" + self.word(tag) + self.int_token(cid))
                self._value(state)
        finally:
            self._leave(previous)

    def copy_form(self, tag, state, obj, out):
        """Write ``[tag, state]`` for a pass-by-copy object ``obj``."""
        previous = self._enter(out)
        try:
            if self._begin_shared(obj):
                self._put_bytes(b"\x02\x80" + self.word(tag))
                self._value(state)
        finally:
            self._leave(previous)

    def _text_form(self, head, fields, out):
        """The pure writer's dates and times call this on their writer."""
        _PyWriter._text_form(self, head, fields, out)

    # -- the buffer

    cdef object _enter(self, object out):
        """Make ``out`` the list written to; return the one it replaces."""
        previous = self._out
        if previous is not out:
            if self._len:
                self._flush()
            self._out = out
        return previous

    cdef int _leave(self, object previous) except -1:
        try:
            self._flush()
            if self._late and previous is None:  # the outermost call returns
                self._put_late_headers()
        finally:
            self._out = previous
        return 0

    cdef inline Py_ssize_t _pieces(self) except -1:
        if type(self._out) is list:
            return PyList_GET_SIZE(self._out)
        return len(self._out)

    cdef int _flush(self) except -1:
        """Make the buffer the caller's next piece."""
        cdef PyObject *piece
        cdef Py_ssize_t size = self._len
        if size == 0:
            return 0
        piece = self._piece
        self._piece = NULL
        self._buf = NULL
        self._cap = 0
        self._len = 0
        if piece is NULL:  # in the scratch area: copied out
            fresh = PyBytes_FromStringAndSize(self._scratch, size)
            Py_INCREF(fresh)
            piece = <PyObject *>fresh
        elif _PyBytes_Resize(&piece, size) < 0:
            return -1  # MemoryError is set
        try:
            data = <object>piece
            if self._inserts:  # reference headers wait for this piece
                data = self._put_headers(data, self._pieces())
            if type(self._out) is list:
                PyList_Append(self._out, data)
            else:
                self._out.append(data)
        finally:
            Py_DECREF(<object>piece)
        return 0

    cdef int _grow(self, Py_ssize_t more) except -1:
        cdef Py_ssize_t size = self._cap * 2
        if size < FIRST_BUFFER:
            size = FIRST_BUFFER
        if size < self._len + more:
            size = self._len + more
        if self._piece is NULL and size <= FIRST_BUFFER:  # (empty: the scratch area)
            if self._scratch is NULL:
                self._scratch = <char *>PyMem_Malloc(FIRST_BUFFER)
                if self._scratch is NULL:
                    raise MemoryError()
            self._buf = self._scratch
            self._cap = FIRST_BUFFER
            return 0
        if self._piece is NULL:  # (from the scratch area, or empty: a bytes object)
            fresh = PyBytes_FromStringAndSize(NULL, size)
            Py_INCREF(fresh)
            self._piece = <PyObject *>fresh
            if self._len:
                memcpy(PyBytes_AS_STRING(fresh), self._buf, self._len)
        elif _PyBytes_Resize(&self._piece, size) < 0:  # it was freed: start afresh
            self._buf = NULL
            self._cap = self._len = 0
            return -1
        self._buf = PyBytes_AS_STRING(<object>self._piece)
        self._cap = size
        return 0

    cdef inline char *_room_for(self, Py_ssize_t more) except NULL:
        if self._len + more > self._cap:
            self._grow(more)
        return self._buf + self._len

    cdef inline int _put(self, const char *data, Py_ssize_t size) except -1:
        cdef char *at = self._room_for(size)
        memcpy(at, data, size)
        self._len += size
        return 0

    cdef inline int _put_bytes(self, bytes data) except -1:
        return self._put(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))

    cdef int _put_piece(self, object piece) except -1:
        """A large payload as a piece of its own, after what is buffered."""
        self._flush()
        if type(self._out) is list:
            PyList_Append(self._out, piece)
        else:
            self._out.append(piece)
        self.wrote_large = True
        return 0

    # -- limits

    cdef inline int _check_string(self, Py_ssize_t size) except -1:
        if self._plain_size and size <= self._size_limit:
            return 0
        return self._check_string_slowly(size)

    cdef int _check_string_slowly(self, Py_ssize_t size) except -1:
        if (size > self._size_limit) if self._plain_size else (size > self.size_limit):
            raise too_large("string", size, self.size_limit)
        return 0

    cdef int _put_list_header(self, Py_ssize_t count, bytes head) except -1:
        cdef char *at
        if (count > self._size_limit) if self._plain_size else (count > self.size_limit):
            raise too_large("list", count, self.size_limit)
        at = self._room_for(MAX_INT_TOKEN + PyBytes_GET_SIZE(head))
        if count < 128:
            at[0] = <char>count
            at[1] = <char>LIST
            self._len += 2
        else:
            self._len += _put_prefix(at, <uint64_t>count)
            self._buf[self._len] = <char>LIST
            self._len += 1
        memcpy(self._buf + self._len, PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head))
        self._len += PyBytes_GET_SIZE(head)
        return 0

    # -- scalars

    cdef Py_ssize_t _int_into(self, char *at, long long value) except -1:
        """Write the token of ``value`` at ``at`` (room for MAX_INT_TOKEN);
        return its size."""
        cdef uint64_t magnitude
        cdef int kind, size
        if 0 <= value < 128:
            at[0] = <char>value
            at[1] = <char>INT
            return 2
        if 0 < value < 16384:
            at[0] = <char>(value & 0x7F)
            at[1] = <char>(value >> 7)
            at[2] = <char>INT
            return 3
        if 0 < value < 2097152:  # request ids of a long-lived connection
            at[0] = <char>(value & 0x7F)
            at[1] = <char>((value >> 7) & 0x7F)
            at[2] = <char>(value >> 14)
            at[3] = <char>INT
            return 4
        if value >= 0:
            magnitude = <uint64_t>value
            kind = INT if value <= 2147483647 else LONGINT
        else:
            magnitude = (<uint64_t>0) - <uint64_t>value
            kind = NEG if value >= -2147483648 else LONGNEG
        size = _prefix_size(magnitude)
        if (size > self._prefix_limit) if self._plain_prefix else (size > self.prefix_limit):
            raise BananaError(f"integer too large to send: needs {size} prefix bytes")
        _put_prefix(at, magnitude)
        at[size] = <char>kind
        return size + 1

    cdef int _int(self, object obj) except -1:
        cdef int overflow = 0
        cdef long long value = PyLong_AsLongLongAndOverflow(obj, &overflow)
        cdef char *at
        if overflow:
            self._put_bytes(encode_int(obj, self.prefix_limit))
            return 0
        at = self._room_for(MAX_INT_TOKEN)
        self._len += self._int_into(at, value)
        return 0

    cdef int _text(self, const char *data, Py_ssize_t size) except -1:
        """The string token of ``data`` (vocabulary-compressed when it can be)."""
        cdef int index
        cdef char *at
        if self._vocab:
            index = _vocab_index(data, size)
            if index:
                at = self._room_for(2)
                at[0] = <char>index
                at[1] = <char>VOCAB
                self._len += 2
                return 0
        self._check_string(size)
        at = self._room_for(size + MAX_INT_TOKEN)
        if size < 128:
            at[0] = <char>size
            at[1] = <char>STRING
            memcpy(at + 2, data, size)
            self._len += size + 2
        else:
            self._len += _put_prefix(at, <uint64_t>size)
            self._buf[self._len] = <char>STRING
            memcpy(self._buf + self._len + 1, data, size)
            self._len += size + 1
        return 0

    cdef int _str(self, object obj) except -1:
        cdef bytes encoded
        cdef const char *data
        cdef Py_ssize_t size
        if PyUnicode_IS_COMPACT_ASCII(obj):
            size = PyUnicode_GET_LENGTH(obj)
            if size < LARGE_PIECE - 32:  # the token cannot be a large piece
                self._put_bytes(self._unicode)
                return self._text(<const char *>PyUnicode_DATA(obj), size)
        encoded = PyUnicode_AsUTF8String(obj)
        size = PyBytes_GET_SIZE(encoded)
        data = PyBytes_AS_STRING(encoded)
        if size < LARGE_PIECE - 32 or (self._vocab and _vocab_index(data, size)):
            self._put_bytes(self._unicode)
            return self._text(data, size)
        self._check_string(size)  # before any of the token is written
        if (PyBytes_GET_SIZE(self._unicode) + _prefix_size(<uint64_t>size) + 1 + size
                < LARGE_PIECE):
            self._put_bytes(self._unicode)
            return self._text(data, size)
        self._put_bytes(self._unicode)
        self._large_header(size)
        self._put_piece(encoded)  # the UTF-8 bytes, not copied again
        return 0

    cdef int _large_header(self, Py_ssize_t size) except -1:
        cdef char *at = self._room_for(MAX_INT_TOKEN)
        self._len += _put_prefix(at, <uint64_t>size)
        self._buf[self._len] = <char>STRING
        self._len += 1
        return 0

    cdef int _bytes(self, object obj) except -1:
        cdef Py_ssize_t size = PyBytes_GET_SIZE(obj)
        if size < LARGE_PIECE:
            return self._text(PyBytes_AS_STRING(obj), size)
        self._check_string(size)
        self._large_header(size)
        self._put_piece(obj)  # a large payload is a piece of its own: never copied
        return 0

    cdef int _float(self, object obj) except -1:
        cdef double number = PyFloat_AS_DOUBLE(obj)
        cdef uint64_t bits
        cdef char *at = self._room_for(9)
        cdef int i
        memcpy(&bits, &number, 8)
        at[0] = <char>FLOAT
        for i in range(8):
            at[8 - i] = <char>(bits & 0xFF)
            bits >>= 8
        self._len += 9
        return 0

    # -- the value dispatcher (hot path)

    cdef int _value(self, object obj) except -1:
        kind = type(obj)
        if kind is str:
            return self._str(obj)
        if kind is int:
            return self._int(obj)
        if kind is dict:
            return self._dict(obj)
        if kind is list:
            return self._list(obj)
        if kind is bytes:
            return self._bytes(obj)
        if kind is float:
            return self._float(obj)
        if obj is None:
            return self._put_bytes(self._none)
        if kind is bool:
            return self._put_bytes(self._true if obj is True else self._false)
        if kind is tuple:
            return self._tuple(obj)
        if kind is set:
            return self._iterable(obj, self._set_head)
        if kind is frozenset:
            return self._iterable(obj, self._frozenset_head)
        return self._other(obj)

    cdef int _other(self, object obj) except -1:
        """Rich kinds through the pure writer's functions, PB objects
        through the context hook."""
        kind = type(obj)
        handler = _DISPATCH.get(kind)
        if handler is not None:
            pieces = []
            handler(self, obj, pieces)
            for piece in pieces:
                self._put_bytes(piece)
            return 0
        self._flush()  # the hook appends pieces of its own and may call back in
        ctx = self.ctx
        if ctx is None or not ctx.jelly_object(obj, self, self._out):
            raise TypeError(
                f"cannot send a {kind.__module__}.{kind.__qualname__} value over PB; "
                "send a basic type, a Referenceable or a Copyable")
        return 0

    cdef int _list(self, list obj) except -1:
        _deeper(2)
        try:
            if self._begin_shared(obj):
                self._put_list_header(len(obj) + 1, self._list_head)
                for item in obj:
                    self._value(item)
        finally:
            _shallower(2)
        return 0

    cdef int _dict(self, dict obj) except -1:
        cdef char *at
        _deeper(2)
        try:
            if self._begin_shared(obj):
                self._put_list_header(len(obj) + 1, self._dict_head)
                for key, item in obj.items():
                    at = self._room_for(2)
                    at[0] = 2
                    at[1] = <char>LIST
                    self._len += 2
                    self._value(key)
                    self._value(item)
        finally:
            _shallower(2)
        return 0

    cdef int _tuple(self, tuple obj) except -1:
        _deeper(3)
        try:
            if self._begin_shared(obj):
                self._put_list_header(len(obj) + 1, self._tuple_head)
                for item in obj:
                    self._value(item)
        finally:
            _shallower(3)
        return 0

    cdef int _iterable(self, object obj, bytes head) except -1:
        _deeper(3)
        try:
            if self._begin_shared(obj):
                self._put_list_header(len(obj) + 1, head)
                for item in obj:
                    self._value(item)
        finally:
            _shallower(3)
        return 0

    # -- reference numbering

    cdef Py_ssize_t _find(self, PyObject *obj) noexcept:
        """Index of ``obj`` among the shared values, or -1."""
        cdef size_t i
        cdef Py_ssize_t entry
        if self._table is NULL:
            return -1
        i = _hash(obj) & self._mask
        while True:
            entry = self._table[i]
            if entry == 0:
                return -1
            if self._shared[entry - 1].obj == obj:
                return entry - 1
            i = (i + 1) & self._mask

    cdef int _add(self, object obj) except -1:
        """Record ``obj`` as starting here."""
        cdef Shared *record
        cdef size_t i
        cdef Py_ssize_t piece = self._pieces()  # (may run Python code: before the pointer)
        if self._count >= self._room:
            self._make_room()
        record = &self._shared[self._count]
        Py_INCREF(obj)
        record.obj = <PyObject *>obj
        record.piece = piece
        record.offset = self._len
        record.ref = 0
        self._count += 1
        i = _hash(<PyObject *>obj) & self._mask
        while self._table[i]:
            i = (i + 1) & self._mask
        self._table[i] = self._count
        return 0

    cdef int _make_room(self) except -1:
        """Twice the room (the table stays at most half full)."""
        cdef Py_ssize_t room = self._room * 2 if self._room else 16
        cdef Py_ssize_t size = room * 2
        cdef Shared *shared = <Shared *>PyMem_Malloc(room * sizeof(Shared))
        cdef Py_ssize_t *table = <Py_ssize_t *>PyMem_Malloc(size * sizeof(Py_ssize_t))
        cdef Py_ssize_t n
        cdef size_t i
        if shared is NULL or table is NULL:
            PyMem_Free(shared)
            PyMem_Free(table)
            raise MemoryError()
        if self._count:
            memcpy(shared, self._shared, self._count * sizeof(Shared))
        memset(table, 0, size * sizeof(Py_ssize_t))
        PyMem_Free(self._shared)
        PyMem_Free(self._table)
        self._shared = shared
        self._table = table
        self._room = room
        self._mask = <size_t>(size - 1)
        for n in range(self._count):
            i = _hash(shared[n].obj) & self._mask
            while table[i]:
                i = (i + 1) & self._mask
            table[i] = n + 1
        return 0

    cdef void _forget_shared(self) noexcept:
        """End a serialisation's numbering, releasing what it kept alive.

        The arrays are detached first: releasing an object may run its
        ``__del__``, which may use this writer again."""
        cdef Py_ssize_t n, count = self._count
        cdef Py_ssize_t room = self._room
        cdef Shared *shared = self._shared
        cdef Py_ssize_t *table = self._table
        cdef PyObject *obj
        self._count = 0
        self._inserts = None
        self._applied = None
        self._late = False
        self._shared = NULL
        self._table = NULL
        self._room = 0
        self._mask = 0
        for n in range(count):
            obj = shared[n].obj
            shared[n].obj = NULL
            Py_XDECREF(obj)
        if table is not NULL and room <= KEEP_TABLE and self._shared is NULL:  # kept
            memset(table, 0, room * 2 * sizeof(Py_ssize_t))
            self._shared = shared
            self._table = table
            self._room = room
            self._mask = <size_t>(room * 2 - 1)
        else:
            PyMem_Free(shared)
            PyMem_Free(table)

    cdef int _begin_shared(self, object obj) except -1:
        """True (after recording where it starts) when ``obj`` was not yet
        written; False after writing its ``dereference``."""
        cdef Py_ssize_t n = self._find(<PyObject *>obj)
        cdef long long ref
        cdef char *at
        if n < 0:
            self._add(obj)
            return 1
        ref = self._shared[n].ref
        if ref == 0:
            ref = self._number(n)
        self._put_bytes(self._deref)
        at = self._room_for(MAX_INT_TOKEN)
        self._len += self._int_into(at, ref)
        return 0

    cdef long long _number(self, Py_ssize_t n) except -1:
        """Second sighting of shared value ``n``: give it the next number,
        note a ``reference`` header for its first occurrence (put in when
        its piece leaves the writer), return the number.

        Only C locals are used once Python objects are made (a collection
        may run a destructor that uses this writer and its table)."""
        cdef Py_ssize_t piece = self._shared[n].piece
        cdef Py_ssize_t start = self._shared[n].offset
        cdef long long ref
        cdef char token[MAX_INT_TOKEN]
        self._next_ref += 1
        ref = self._shared[n].ref = self._next_ref
        header = self._ref + PyBytes_FromStringAndSize(token, self._int_into(token, ref))
        inserts = self._inserts
        if inserts is None:
            inserts = self._inserts = {}
        waiting = inserts.get(piece)
        if waiting is None:
            waiting = inserts[piece] = []
        waiting.append((start, n, header))
        if piece < self._pieces():  # already flushed: rebuilt when the call returns
            self._late = True
        return ref

    cdef object _put_headers(self, object data, Py_ssize_t piece):
        """Piece ``piece`` (``data``) with the headers waiting for it put in,
        in one pass past the headers it already has."""
        inserts, applied = self._inserts, self._applied  # (a destructor may reset them)
        waiting = inserts.pop(piece, None) if inserts is not None else None
        if not waiting:
            return data
        if applied is None:
            applied = self._applied = {}
        done = applied.get(piece)
        entries = [(offset, order, False, header) for offset, order, header in waiting]
        if done:
            entries.extend([(offset, order, True, size) for offset, order, size in done])
        entries.sort()  # by offset, then order: each shared value has one order
        parts = []
        cdef Py_ssize_t at = 0, shift = 0, place, size
        for offset, order, present, what in entries:
            place = <Py_ssize_t>offset + shift
            parts.append(data[at:place])
            at = place
            if present:  # already in data: keep it
                size = what
                parts.append(data[at:at + size])
                at += size
                shift += size
            else:
                parts.append(what)
        parts.append(data[at:])
        applied[piece] = [(offset, order, what if present else len(what))
                          for offset, order, present, what in entries]
        return b"".join(parts)

    cdef int _put_late_headers(self) except -1:
        """Rebuild the flushed pieces that headers wait for."""
        out = self._out
        self._late = False
        if self._inserts:
            for piece in sorted(self._inserts):  # (a copy of the keys)
                out[piece] = self._put_headers(out[piece], piece)
        return 0


# -- The C interface (_cwriter.pxd): what the compiled broker core calls on
# its writer, as C calls instead of Python method calls when it is this
# Writer (else, a pure one that tests put in, through its methods).

cdef int writer_write_items(writer, head, items, out) except -1:
    if type(writer) is Writer:
        return (<Writer>writer)._write_items(head, items, out)
    writer.write_items(head, items, out)
    return 0


cdef object writer_int_token(writer, n):
    if type(writer) is Writer:
        return (<Writer>writer)._int_token(n)
    return writer.int_token(n)


cdef bint writer_wrote_large(writer) except -1:
    if type(writer) is Writer:
        return (<Writer>writer).wrote_large
    return writer.wrote_large


cdef int writer_clear_large(writer) except -1:
    if type(writer) is Writer:
        (<Writer>writer).wrote_large = False
    else:
        writer.wrote_large = False
    return 0
