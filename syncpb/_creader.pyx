# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled Jelly reading: a complete message's bytes straight to Python values (layer L1).

The compiled twin of :mod:`syncpb.jellyreader`; :mod:`syncpb.jelly` exports
this :class:`Reader` when it is built (``speedups.load("_creader")``) and the
pure one otherwise. The pure reader is the reference: for the same bytes,
limits and allow-list both give equal values, leave ``pos`` at the same
offset and raise the same exception classes with the same messages.

Theory of operation
-------------------
The reader keeps a C pointer to the bytes of ``buf`` (always a ``bytes``
object it holds a reference to) with its length, and ``pos`` as a C
integer. Every read is an explicit bounds check and a byte load: where the
pure reader lets ``buf[i]`` raise IndexError and turns it into
:class:`~syncpb.jellybase.Incomplete`, this one checks ``i < n`` and raises
Incomplete itself.

The code follows the pure reader function by function, fast paths
included, because its fast paths are part of its observable behaviour (they
skip some checks the general path makes: the depth check of
``['unicode', ...]``, for instance). So:

* ``_value`` reads small ints (one to three prefix bytes), short strings
  and floats inline; recognises a vocabulary head ``list``/``tuple``/
  ``dictionary`` with two byte compares and enters its handler directly; and
  recognises ``['unicode', <short string>]`` with one ``memcmp`` of its
  eleven head bytes, decoding the UTF-8 in place from the buffer
  (``PyUnicode_DecodeUTF8``: strict, as ``bytes.decode``). Anything else
  takes ``_general_value``: two token headers, the allow-list checks and a
  C ``switch`` over the head's code.
* ``_h_dict`` recognises a ``[['unicode', key], value]`` pair with one
  ``memcmp`` of its thirteen head bytes and decodes the key in place. Records
  repeat their keys, so each reader keeps the last short ASCII key seen in
  each of 64 slots (chosen by a hash of its bytes) and hands the same str
  out again when the same bytes come back: no decoding, and its hash is
  already known to the dict. (An equal str, as the pure reader's; only its
  identity may be shared between values.)
* Lists and dicts are built with the C API (``PyList_Append``,
  ``PyDict_SetItem``); no tuple is made per token: a header's value stays in
  a C field (``_hval``, or the Python int ``_hbig`` beyond 63 bits).

Nothing is cached across a call into Python code (a factory, a context
hook, a key's ``__hash__``): the pointer, length and position are read from
the reader again afterwards, so even a callback that restarts the reader
cannot leave a dangling pointer behind.

Where the pure reader's ``try: ... except IndexError`` covers a call into
nested decoding (the vocabulary-head fast path, the general path reached
from a two- or three-byte prefix), this reader wraps the same calls, and the
one place where the pure reader can raise a bare IndexError from nested
decoding (the pair fast path of ``_h_dict`` at the very end of a truncated
buffer) raises the same IndexError here: the errors match whichever path
the pure reader would have taken.

Shared and cyclic structure uses the pure reader's scheme (registration of
lists, dicts and objects before their contents, ``_Pending`` placeholders
for dereferences to tuples under construction, deferred tuples) with the
same dictionaries and the same error messages. Nesting is bounded by
``max_depth`` as in the pure reader; each level also passes through
``Py_EnterRecursiveCall`` so that an absurd ``max_depth`` meets Python's
RecursionError (which the broker reports) instead of overflowing the C stack.

The rare kinds that keep no state (decimal, datetime, date, time,
timedelta, unpersistable, persistent, remote, local, cached, lcache) run the
pure reader's own handler functions with this reader as ``self``; they use
only ``raw``, ``_arity``, ``_raw_text``, ``_fields`` and ``ctx``, which this
class provides with the same behaviour.

``buf`` must be ``bytes`` (a ``bytes`` subclass is read as bytes); another
buffer type is copied into ``bytes`` when given. ``pos`` cannot be set
negative (ValueError).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_FromDouble
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy

from .banana import LONG_STRING as _PY_LONG_STRING
from .banana import VOCAB_INDEX, VOCABULARY
from . import banana as _banana
from .errors import BananaError, InsecureJelly, ProtocolError
from .jellybase import BASIC_TYPES, Incomplete, JellyError
from .jellyreader import Reader as _PyReader

__all__ = ["Reader"]


cdef extern from "Python.h":
    int Py_EnterRecursiveCall(const char* where)  # nonzero: RecursionError is set
    void Py_LeaveRecursiveCall()
    Py_ssize_t PY_SSIZE_T_MAX
    Py_ssize_t PY_SSIZE_T_MIN
    bint PyUnicode_IS_ASCII(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(PyObject* text)
    void* PyUnicode_DATA(PyObject* text)


# Banana type bytes (checked against syncpb.banana below).
cdef enum:
    LIST = 0x80
    INT = 0x81
    STRING = 0x82
    NEG = 0x83
    FLOAT = 0x84
    LONGINT = 0x85
    LONGNEG = 0x86
    VOCAB = 0x87

# Dictionary keys remembered by each reader (see Reader._key).
cdef enum:
    KEY_SLOTS = 64
    KEY_LONGEST = 24

# Handler codes for the allowed list heads.
cdef enum:
    H_NONE_FOUND = 0
    H_UNICODE
    H_NONE
    H_BOOLEAN
    H_LIST
    H_TUPLE
    H_DICT
    H_SET
    H_FROZENSET
    H_REFERENCE
    H_DEREFERENCE
    H_PYTHON  # a pure reader's handler, from _PY_HANDLERS

if (_banana.LIST, _banana.INT, _banana.STRING, _banana.NEG, _banana.FLOAT, _banana.LONGINT,
        _banana.LONGNEG, _banana.VOCAB) != (0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87):
    raise ImportError("syncpb._creader was built for other Banana type bytes: rebuild it")

cdef Py_ssize_t LONG_STRING = _PY_LONG_STRING
cdef Py_ssize_t N_VOCABULARY = len(VOCABULARY)
cdef tuple _VOCABULARY = tuple(VOCABULARY)
cdef unsigned int V_LIST = VOCAB_INDEX[b"list"]
cdef unsigned int V_TUPLE = VOCAB_INDEX[b"tuple"]
cdef unsigned int V_DICT = VOCAB_INDEX[b"dictionary"]

cdef bytes _UNICODE_HEAD = b"\x02\x80\x07\x82unicode"
cdef Py_ssize_t UNICODE_LEN = 11
cdef bytes _PAIR_UNICODE_HEAD = b"\x02\x80" + _UNICODE_HEAD  # a [key, value] pair with a str key
cdef Py_ssize_t PAIR_UNICODE_LEN = 13
cdef const char* UNICODE_HEAD = _UNICODE_HEAD
cdef const char* PAIR_UNICODE_HEAD = _PAIR_UNICODE_HEAD

cdef frozenset _VOCAB_CONTAINER_HEADS = frozenset({b"list", b"tuple", b"dictionary"})




def _canonical(bytes word) -> bytes:
    """The allow-list's own object for ``word`` (BASIC_TYPES's): a set that
    holds it (every default allow-list) finds it by identity, without
    comparing bytes."""
    for item in BASIC_TYPES:
        if item == word:
            return item
    return word


cdef bytes _W_LIST = _canonical(b"list")
cdef bytes _W_TUPLE = _canonical(b"tuple")
cdef bytes _W_DICTIONARY = _canonical(b"dictionary")
cdef bytes _W_UNICODE = _canonical(b"unicode")


cdef inline bint _has_container_heads(types) except -1:
    """``_VOCAB_CONTAINER_HEADS <= types``; for a set, three lookups (cheaper)."""
    if type(types) is set or type(types) is frozenset:
        return _W_LIST in types and _W_TUPLE in types and _W_DICTIONARY in types
    return _VOCAB_CONTAINER_HEADS <= types

#: list head -> handler code (every head the pure reader has a handler for)
cdef dict _CODES = {
    b"unicode": H_UNICODE, b"None": H_NONE, b"boolean": H_BOOLEAN, b"list": H_LIST,
    b"tuple": H_TUPLE, b"dictionary": H_DICT, b"set": H_SET, b"frozenset": H_FROZENSET,
    b"reference": H_REFERENCE, b"dereference": H_DEREFERENCE,
    b"decimal": H_PYTHON, b"datetime": H_PYTHON, b"date": H_PYTHON, b"time": H_PYTHON,
    b"timedelta": H_PYTHON, b"unpersistable": H_PYTHON, b"persistent": H_PYTHON,
    b"remote": H_PYTHON, b"local": H_PYTHON, b"cached": H_PYTHON, b"lcache": H_PYTHON,
}

#: the pure reader's handlers for the kinds that keep no reader state
cdef dict _PY_HANDLERS = {
    b"decimal": _PyReader._h_decimal, b"datetime": _PyReader._h_datetime,
    b"date": _PyReader._h_date, b"time": _PyReader._h_time,
    b"timedelta": _PyReader._h_timedelta, b"unpersistable": _PyReader._h_unpersistable,
    b"persistent": _PyReader._h_unpersistable, b"remote": _PyReader._h_remote,
    b"local": _PyReader._h_local, b"cached": _PyReader._h_cached,
    b"lcache": _PyReader._h_lcache,
}
_py_fields = _PyReader._fields

cdef object _INDEX_ERROR_TEXT = "index out of range"  # bytes[i] beyond the end, as Python says


cdef inline double _unpack_double(const unsigned char* p) noexcept:
    """A big-endian IEEE 754 double (``struct.unpack('>d')``)."""
    cdef uint64_t bits = 0
    cdef int i
    cdef double result
    for i in range(8):
        bits = (bits << 8) | p[i]
    memcpy(&result, &bits, 8)
    return result


cdef inline int _nest(const char* where) except -1:
    """Count one level of C recursion against Python's recursion limit."""
    if Py_EnterRecursiveCall(where):
        return -1  # RecursionError is set
    return 0


cdef inline Py_ssize_t _clamp(object value):
    """``value`` as a C size, saturated (a limit beyond the C range is no limit)."""
    if value > PY_SSIZE_T_MAX:
        return PY_SSIZE_T_MAX
    if value < PY_SSIZE_T_MIN:
        return PY_SSIZE_T_MIN
    return value


@cython.final
@cython.freelist(8)
cdef class _Pending:
    """A value not built yet: a ``dereference`` to an immutable container
    still being built, or a tuple holding such a value (``items`` set; it
    is built once its ``missing`` items are).

    ``fixups`` are the ``(container, key)`` slots to fill with the value; a
    container may itself be a pending tuple.
    """

    cdef public list fixups
    cdef public object items
    cdef public Py_ssize_t missing
    cdef public list numbers  # reference numbers naming this tuple

    def __cinit__(self) -> None:
        self.fixups = []
        self.items = None
        self.missing = 0
        self.numbers = []


@cython.auto_pickle(False)
cdef class Reader:
    """Decoder of one complete message held in ``buf`` (compiled).

    The broker reads a message's protocol fields with the ``raw_*`` methods
    and its payloads with :meth:`jelly`. Reading past the end of ``buf``
    raises :class:`Incomplete`. Same interface and results as
    :class:`syncpb.jellyreader.Reader`.
    """

    cdef bytes _buf
    cdef const unsigned char* _p
    cdef Py_ssize_t _n
    cdef Py_ssize_t _pos
    cdef public Py_ssize_t start
    cdef public object security
    cdef public object ctx
    cdef public bint vocab
    cdef object _size_limit_value
    cdef Py_ssize_t _size_limit
    cdef object _prefix_limit_value
    cdef Py_ssize_t _prefix_limit
    cdef object _max_depth_value
    cdef Py_ssize_t _max_depth
    cdef public Py_ssize_t depth
    cdef public object context
    cdef public object imported
    cdef public object long_strings
    cdef dict _refs
    cdef dict _pending
    cdef object _claim
    cdef bint _fast_unicode
    cdef bint _fast_heads
    # the last header's value: _hval, or _hbig (a Python int) beyond 63 bits
    cdef unsigned long long _hval
    cdef object _hbig
    # recent ASCII dictionary keys (owned references, or NULL), by a hash of their bytes
    cdef PyObject* _keys[KEY_SLOTS]

    def __dealloc__(self) -> None:
        cdef int i
        for i in range(KEY_SLOTS):
            Py_XDECREF(self._keys[i])
            self._keys[i] = NULL

    def __init__(self, buf: bytes, pos: int, security, ctx=None, vocab: bool = True,
                 size_limit: int = _banana.SIZE_LIMIT, prefix_limit: int = _banana.PREFIX_LIMIT,
                 max_depth: int = 200) -> None:
        self._set_buf(buf)
        self.pos = pos
        self.start = pos
        self.security = security
        self.ctx = ctx
        self.vocab = vocab
        self.size_limit = size_limit
        if prefix_limit < 4:  # the inline paths read 2- and 3-byte prefixes unchecked
            raise ValueError("prefix_limit must be at least 4 bytes")
        self.prefix_limit = prefix_limit
        self.max_depth = max_depth
        self.depth = 0
        self.context = None  # free for the broker (e.g. the perspective)
        self.imported = []  # import records touched, committed by the broker
        #: long string payloads cut out of ``buf``, by offset (see banana.cut_long_strings)
        self.long_strings = None
        self._refs = {}
        # dereferences not resolved yet by number; tuples waiting for them by (id,)
        self._pending = {}
        self._claim = None
        self._hbig = None
        # The inline fast path reads strings of up to 127 bytes unchecked.
        self._fast_unicode = _W_UNICODE in security.types and self._size_limit >= 127
        self._fast_heads = self.vocab and _has_container_heads(security.types)

    cdef int _set_buf(self, object buf) except -1:
        cdef bytes data = buf if isinstance(buf, bytes) else bytes(buf)
        self._buf = data
        self._p = <const unsigned char*>PyBytes_AS_STRING(data)
        self._n = PyBytes_GET_SIZE(data)
        return 0

    @property
    def buf(self) -> bytes:
        return self._buf

    @buf.setter
    def buf(self, value: bytes) -> None:
        self._set_buf(value)

    @property
    def pos(self) -> int:
        return self._pos

    @pos.setter
    def pos(self, value: int) -> None:
        cdef Py_ssize_t pos = value
        if pos < 0:
            raise ValueError("pos must not be negative")
        self._pos = pos

    @property
    def size_limit(self) -> int:
        return self._size_limit_value

    @size_limit.setter
    def size_limit(self, value: int) -> None:
        self._size_limit = _clamp(value)
        self._size_limit_value = value

    @property
    def prefix_limit(self) -> int:
        return self._prefix_limit_value

    @prefix_limit.setter
    def prefix_limit(self, value: int) -> None:
        self._prefix_limit = _clamp(value)
        self._prefix_limit_value = value

    @property
    def max_depth(self) -> int:
        return self._max_depth_value

    @max_depth.setter
    def max_depth(self, value: int) -> None:
        self._max_depth = _clamp(value)
        self._max_depth_value = value

    def restart(self, buf: bytes, pos: int, security, long_strings) -> None:
        """Reuse this reader for the next message (as if newly made for it)."""
        self._restart(buf, pos, security, long_strings)

    cdef int _restart(self, object buf, Py_ssize_t pos, object security,
                      object long_strings) except -1:
        self._set_buf(buf)
        self.security = security
        if pos < 0:
            raise ValueError("pos must not be negative")
        self._pos = self.start = pos
        self.depth = 0
        self.context = None
        if self.imported:
            self.imported = []
        self.long_strings = long_strings
        self._claim = None
        types = security.types  # the allow-list may have changed since
        self._fast_unicode = _W_UNICODE in types and self._size_limit >= 127
        self._fast_heads = self.vocab and _has_container_heads(types)
        return 0

    # -- tokens

    def header(self) -> tuple:
        """Read one token header: ``(type byte, prefix value)``."""
        cdef int kind = self._header()
        return kind, self._header_value()

    cdef object _header_value(self):
        if self._hbig is not None:
            return self._hbig
        return PyLong_FromUnsignedLongLong(self._hval)

    cdef int _header(self) except -1:
        """Read one token header; return its type byte and leave its value in
        ``_hval`` (or ``_hbig``)."""
        cdef const unsigned char* p = self._p
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t end, i
        cdef unsigned int first, second
        cdef unsigned long long value = 0
        cdef object big
        if pos >= n:
            raise Incomplete()
        first = p[pos]
        if first >= 0x80:
            self._pos = pos + 1
            self._hval = 0
            self._hbig = None
            return self._checked(first)
        if pos + 1 >= n:
            raise Incomplete()
        second = p[pos + 1]
        if second >= 0x80:
            self._pos = pos + 2
            self._hval = first
            self._hbig = None
            return self._checked(second)
        end = pos + 2
        while True:
            if end >= n:
                raise Incomplete()
            if p[end] >= 0x80:
                break
            end += 1
            if end - pos > self._prefix_limit:
                raise BananaError(f"prefix longer than {self.prefix_limit} bytes")
        self._hbig = None
        if end - pos <= 9:  # at most 63 bits
            i = end - 1
            while i >= pos:
                value = (value << 7) | p[i]
                i -= 1
            self._hval = value
        else:
            big = 0
            i = end - 1
            while i >= pos:
                big = (big << 7) | p[i]
                i -= 1
            if big.bit_length() <= 63:
                self._hval = big
            else:
                self._hval = 0
                self._hbig = big
        self._pos = end + 1
        return self._checked(p[end])

    cdef int _checked(self, unsigned int kind) except -1:
        cdef object what
        if kind > VOCAB:
            raise BananaError(f"invalid Banana type byte 0x{kind:02x}")
        if ((kind == STRING or kind == LIST)
                and (self._hbig is not None or <long long>self._hval > self._size_limit)):
            what = "string" if kind == STRING else "list"  # the framer's words, exactly
            raise BananaError(f"{what} header of {self._header_value()} exceeds the size "
                              f"limit {self.size_limit}")
        return kind

    cdef object _string_body(self, Py_ssize_t size):
        cdef Py_ssize_t pos = self._pos
        if self.long_strings is not None and size >= LONG_STRING:
            taken = self.long_strings.get(pos)
            if taken is not None:  # assembled from the chunks; not in buf
                return taken
        if size > self._n - pos:
            raise Incomplete()
        self._pos = pos + size
        return PyBytes_FromStringAndSize(<const char*>self._p + pos, size)

    cdef object _word(self):
        if not self.vocab:
            raise BananaError("vocabulary token outside the pb dialect")
        if self._hbig is None and 0 < self._hval < <unsigned long long>N_VOCABULARY:
            return _VOCABULARY[self._hval]
        raise BananaError(f"unknown vocabulary index {self._header_value()}")

    cdef object _scalar(self, int kind):
        """The value of the scalar token whose header was just read."""
        cdef Py_ssize_t pos
        if kind == STRING:
            return self._string_body(<Py_ssize_t>self._hval)
        if kind == INT or kind == LONGINT:
            return self._header_value()
        if kind == NEG or kind == LONGNEG:
            if self._hbig is not None:
                return -self._hbig
            return PyLong_FromLongLong(-<long long>self._hval)
        if kind == FLOAT:
            pos = self._pos
            if pos + 8 > self._n:
                raise Incomplete()
            self._pos = pos + 8
            return PyFloat_FromDouble(_unpack_double(self._p + pos))
        return self._word()

    # -- raw (non-Jelly) values for protocol fields

    def raw(self):
        """Read a plain Banana value (lists stay lists)."""
        return self._raw()

    cdef object _raw(self):
        cdef const unsigned char* p = self._p
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t end, count, i
        cdef unsigned int kind, third
        cdef list result
        if pos + 1 < n and p[pos] < 0x80:  # the usual fields: small ints, short strings
            kind = p[pos + 1]
            if kind == INT:
                self._pos = pos + 2
                return p[pos]
            if kind < 0x80 and pos + 2 < n:  # request ids: 2- and 3-byte prefixes
                third = p[pos + 2]
                if third == INT:
                    self._pos = pos + 3
                    return p[pos] | kind << 7
                if third < 0x80 and pos + 3 < n and p[pos + 3] == INT:
                    self._pos = pos + 4
                    return p[pos] | kind << 7 | third << 14
            if kind == STRING and self._size_limit >= 127:
                end = pos + 2 + p[pos]
                if end <= n:
                    self._pos = end
                    return PyBytes_FromStringAndSize(<const char*>p + pos + 2, p[pos])
        kind = self._header()
        if kind != LIST:
            return self._scalar(kind)
        count = <Py_ssize_t>self._hval
        self._enter()
        try:
            _nest(" while reading a Banana list")
            try:
                result = []
                for i in range(count):
                    result.append(self._raw())
                return result
            finally:
                Py_LeaveRecursiveCall()
        finally:
            self.depth -= 1

    def raw_fields(self, Py_ssize_t count) -> list:
        """Read ``count`` plain values (a message's protocol fields) in one call."""
        return self._raw_fields(count)

    cdef list _raw_fields(self, Py_ssize_t count):
        cdef list fields = []
        cdef const unsigned char* p
        cdef Py_ssize_t n, pos, end, i
        cdef unsigned int kind
        for i in range(count):
            p = self._p
            n = self._n
            pos = self._pos
            if pos + 2 < n and p[pos] < 0x80:  # the usual: small ints, short strings
                kind = p[pos + 1]
                if kind == INT:
                    self._pos = pos + 2
                    fields.append(p[pos])
                    continue
                if kind == STRING and self._size_limit >= 127:
                    end = pos + 2 + p[pos]
                    if end <= n:
                        self._pos = end
                        fields.append(PyBytes_FromStringAndSize(<const char*>p + pos + 2,
                                                                p[pos]))
                        continue
            fields.append(self._raw())
        return fields

    def raw_int(self) -> int:
        """Read a bare integer field."""
        value = self._raw()
        if type(value) is not int:
            raise ProtocolError(f"expected an integer, got {type(value).__name__}")
        return value

    def raw_bytes(self) -> bytes:
        """Read a bare byte-string field."""
        value = self._raw()
        if type(value) is not bytes:
            raise ProtocolError(f"expected a byte string, got {type(value).__name__}")
        return value

    def list_header(self) -> int:
        """Read the header of a list field and return its item count."""
        cdef int kind = self._header()
        if kind != LIST:
            raise ProtocolError("expected a list")
        return self._header_value()

    def skip(self) -> None:
        """Skip one complete value without building it."""
        cdef Py_ssize_t remaining = 1
        cdef int kind
        while remaining:
            kind = self._header()
            remaining -= 1
            if kind == LIST:
                remaining += <Py_ssize_t>self._hval
            elif kind == STRING:
                self._string_body(<Py_ssize_t>self._hval)
            elif kind == FLOAT:
                self._scalar(kind)

    # -- Jelly

    def jelly(self):
        """Read one serialisation (fresh reference numbering).

        Raises:
            Incomplete: the message is not complete yet.
            JellyError: the value is malformed, including values Python
                refuses to build (an unhashable set member, a year 10**9).
            InsecureJelly: a form the allow-list refuses.
        """
        return self._jelly()

    cdef object _jelly(self):
        pending = None
        try:
            value = self._value()
        except (TypeError, ValueError, OverflowError, ArithmeticError, LookupError) as exc:
            raise JellyError(f"malformed value: {exc}") from exc
        finally:  # a reader outlives its message: keep none of its objects alive
            if self._refs:
                self._refs = {}
            if self._pending:
                pending, self._pending = self._pending, {}
        if pending:
            raise JellyError("dereference to a reference that was never defined "
                             "(or a cycle through tuples only)")
        return value

    cdef int _enter(self) except -1:
        self.depth += 1
        if self.depth > self._max_depth:
            raise JellyError(f"value nested deeper than {self.max_depth} levels")
        return 0

    def value(self):
        """Read one Jelly value inside the current serialisation."""
        return self._value()

    cdef object _value(self):
        cdef const unsigned char* p = self._p
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t pos = self._pos
        cdef Py_ssize_t first, end, start, size
        cdef unsigned int kind, third, word
        cdef int code
        if pos >= n:
            raise Incomplete()
        first = p[pos]
        if first < 0x80 and self._size_limit >= 127:
            if pos + 1 >= n:
                raise Incomplete()
            kind = p[pos + 1]
            if kind == INT:
                self._pos = pos + 2
                return first
            if kind < 0x80:  # counters and ids: two or three prefix bytes
                if pos + 2 >= n:
                    raise Incomplete()
                third = p[pos + 2]
                if third == INT:
                    self._pos = pos + 3
                    return first | kind << 7
                if third < 0x80:
                    if pos + 3 >= n:
                        raise Incomplete()
                    if p[pos + 3] == INT:
                        self._pos = pos + 4
                        return first | kind << 7 | third << 14
                try:
                    return self._general_value()
                except IndexError:
                    raise Incomplete() from None
            if kind == STRING:
                end = pos + 2 + first
                if end > n:
                    raise Incomplete()
                self._pos = end
                return PyBytes_FromStringAndSize(<const char*>p + pos + 2, first)
            # Never look past a token: an empty list has no head (what
            # follows belongs to something else), and a head without a
            # prefix byte is one byte long. Both take the general path.
            if kind == LIST and first:
                if pos + 2 >= n:
                    raise Incomplete()
                word = p[pos + 2]
                if word < 0x80:
                    if pos + 3 >= n:
                        raise Incomplete()
                    if p[pos + 3] == VOCAB and self._fast_heads and self._claim is None:
                        code = (H_LIST if word == V_LIST else H_TUPLE if word == V_TUPLE
                                else H_DICT if word == V_DICT else H_NONE_FOUND)
                        if code != H_NONE_FOUND and first == 1:  # empty: no kwargs, say
                            if self.depth >= self._max_depth:  # still one level of nesting
                                raise JellyError(
                                    f"value nested deeper than {self.max_depth} levels")
                            self._pos = pos + 4
                            if code == H_LIST:
                                return []
                            if code == H_TUPLE:
                                return ()
                            return {}
                        if code != H_NONE_FOUND:  # [list|tuple|dictionary, ...]: straight in
                            self._pos = pos + 4
                            self.depth += 1
                            if self.depth > self._max_depth:
                                raise JellyError(
                                    f"value nested deeper than {self.max_depth} levels")
                            try:
                                try:
                                    _nest(" while decoding a Jelly value")
                                    try:
                                        if code == H_DICT:
                                            return self._h_dict(first - 1)
                                        if code == H_LIST:
                                            return self._h_list(first - 1)
                                        return self._h_tuple(first - 1)
                                    finally:
                                        Py_LeaveRecursiveCall()
                                finally:
                                    self.depth -= 1
                            except IndexError:
                                raise Incomplete() from None
            if (first == 2 and kind == LIST and self._fast_unicode and n - pos >= UNICODE_LEN
                    and memcmp(p + pos, UNICODE_HEAD, UNICODE_LEN) == 0):
                if pos + UNICODE_LEN >= n:
                    raise Incomplete()
                size = p[pos + UNICODE_LEN]
                if size < 0x80:
                    if pos + UNICODE_LEN + 1 >= n:
                        raise Incomplete()
                    if p[pos + UNICODE_LEN + 1] == STRING:
                        start = pos + UNICODE_LEN + 2
                        end = start + size
                        if end > n:
                            raise Incomplete()
                        self._pos = end
                        try:
                            return PyUnicode_DecodeUTF8(<const char*>p + start, size, NULL)
                        except UnicodeDecodeError as exc:
                            raise JellyError(f"unicode value is not UTF-8: {exc}") from None
        elif first == FLOAT:
            if pos + 9 > n:
                raise Incomplete()
            self._pos = pos + 9
            return PyFloat_FromDouble(_unpack_double(p + pos + 1))
        return self._general_value()

    cdef object _general_value(self):
        cdef int kind = self._header()
        cdef int head_kind
        cdef Py_ssize_t value
        cdef object head
        if kind != LIST:
            return self._scalar(kind)
        value = <Py_ssize_t>self._hval
        if not value:
            raise JellyError("empty list where a Jelly value was expected")
        head_kind = self._header()
        if head_kind == STRING:
            head = self._string_body(<Py_ssize_t>self._hval)
        elif head_kind == VOCAB:
            head = self._word()
        else:
            raise JellyError("Jelly list without a type name")
        self.depth += 1
        if self.depth > self._max_depth:
            raise JellyError(f"value nested deeper than {self.max_depth} levels")
        try:
            _nest(" while decoding a Jelly value")
            try:
                return self._dispatch(head, value - 1)
            finally:
                Py_LeaveRecursiveCall()
        finally:
            self.depth -= 1

    cdef object _dispatch(self, object head, Py_ssize_t count):
        """Build the ``[head, ...]`` form whose ``count`` items follow."""
        cdef object claim = self._claim
        cdef object security = self.security
        cdef object code_value
        cdef int code = H_NONE_FOUND
        self._claim = None
        factory = security.factories.get(head)
        if factory is not None:
            return self._copy(factory, count, claim)
        if head in security.types:
            code_value = _CODES.get(head)
            if code_value is not None:
                code = code_value
        if code == H_NONE_FOUND:
            entry = security.registry.lookup(head)
            if entry is not None:
                return self._registered(entry, count, claim)
            if b"." in head:
                module = head.rpartition(b".")[0].decode("utf-8", "replace")
                raise InsecureJelly(f"Module {module} not allowed "
                                    f"(in type {head.decode('utf-8', 'replace')}).")
            raise InsecureJelly(repr(head))
        if claim is not None and (code == H_LIST or code == H_DICT):
            self._claim = claim
        if code == H_DICT:
            return self._h_dict(count)
        if code == H_LIST:
            return self._h_list(count)
        if code == H_TUPLE:
            return self._h_tuple(count)
        if code == H_UNICODE:
            return self._h_unicode(count)
        if code == H_NONE:
            if count != 0:
                raise JellyError(f"None needs 0 item(s), got {count}")
            return None
        if code == H_BOOLEAN:
            return self._h_boolean(count)
        if code == H_SET:
            return self._h_set(count, False)
        if code == H_FROZENSET:
            return self._h_set(count, True)
        if code == H_REFERENCE:
            return self._h_reference(count)
        if code == H_DEREFERENCE:
            return self._h_dereference(count)
        return _PY_HANDLERS[head](self, count)

    # -- the pure reader's helpers, for its handlers run with this reader

    def _arity(self, count: int, expected: int, what: str) -> None:
        if count != expected:
            raise JellyError(f"{what} needs {expected} item(s), got {count}")

    def _raw_text(self, count: int, what: str) -> bytes:
        return self._c_raw_text(count, what)

    def _fields(self, count: int, what: str, size: int) -> list:
        return _py_fields(self, count, what, size)

    cdef object _c_raw_text(self, Py_ssize_t count, str what):
        if count != 1:
            raise JellyError(f"{what} needs 1 item(s), got {count}")
        value = self._raw()
        if type(value) is not bytes:
            raise JellyError(f"{what} needs a byte string")
        return value

    # -- handlers

    cdef object _h_unicode(self, Py_ssize_t count):
        cdef bytes text = self._c_raw_text(count, "unicode")
        try:
            return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text), NULL)
        except UnicodeDecodeError as exc:
            raise JellyError(f"unicode value is not UTF-8: {exc}") from None

    cdef object _h_boolean(self, Py_ssize_t count):
        text = self._c_raw_text(count, "boolean")
        if text == b"true":
            return True
        if text == b"false":
            return False
        raise JellyError(f"bad boolean {text!r}")

    cdef inline object _own(self):
        claim = self._claim
        self._claim = None
        return claim

    cdef int _register(self, object number, object obj) except -1:
        cdef _Pending pending
        if number is None:
            return 0
        if number in self._refs:
            raise JellyError(f"reference {number} defined twice")
        self._refs[number] = obj
        found = self._pending.pop(number, None)
        if type(obj) is _Pending:  # a tuple still waiting for items: its users wait too
            (<_Pending>obj).numbers.append(number)
            if found is not None:
                (<_Pending>obj).fixups.extend((<_Pending>found).fixups)
        elif found is not None:
            self._resolve((<_Pending>found).fixups, obj)
        return 0

    cdef _Pending _deferred_tuple(self, list items):
        """A tuple with items not built yet (a cycle through it and a list or
        dict): a placeholder, filled in where it is used once it is built."""
        cdef _Pending placeholder = _Pending()
        cdef Py_ssize_t index
        placeholder.items = items
        for index, item in enumerate(items):
            if type(item) is _Pending:
                (<_Pending>item).fixups.append((placeholder, index))
                placeholder.missing += 1
        self._pending[(id(placeholder),)] = placeholder  # unresolved until built
        return placeholder

    cdef int _resolve(self, list fixups, object obj) except -1:
        """Put ``obj`` in every slot waiting for it, and build the deferred
        tuples that completes, and so on (a loop: chains may be long)."""
        cdef list work = [(fixups, obj)]
        cdef _Pending waiting
        while work:
            fixups, obj = work.pop()
            for container, key in fixups:
                if type(container) is not _Pending:
                    container[key] = obj
                    continue
                waiting = <_Pending>container
                waiting.items[key] = obj
                waiting.missing -= 1
                if not waiting.missing:
                    built = tuple(waiting.items)
                    del self._pending[(id(waiting),)]
                    for number in waiting.numbers:
                        self._refs[number] = built
                    work.append((waiting.fixups, built))
        return 0

    cdef inline int _fill(self, object container, object key, object item) except -1:
        if type(item) is _Pending:
            (<_Pending>item).fixups.append((container, key))
        return 0

    cdef list _h_list(self, Py_ssize_t count):
        cdef list result = []
        cdef Py_ssize_t index
        self._register(self._own(), result)
        for index in range(count):
            item = self._value()
            result.append(item)
            if self._pending:
                self._fill(result, index, item)
        return result

    cdef bint _any_pending(self, list items):
        for item in items:
            if type(item) is _Pending:
                return True
        return False

    cdef object _h_tuple(self, Py_ssize_t count):  # a tuple, or a _Pending one
        cdef list items = []
        cdef Py_ssize_t index
        for index in range(count):
            items.append(self._value())
        if self._pending and self._any_pending(items):
            return self._deferred_tuple(items)
        return tuple(items)

    cdef object _h_set(self, Py_ssize_t count, bint frozen):
        cdef list items = []
        cdef Py_ssize_t index
        for index in range(count):
            items.append(self._value())
        if self._pending and self._any_pending(items):
            raise JellyError(f"unsupported cycle through a {'frozenset' if frozen else 'set'}")
        if frozen:
            return frozenset(items)
        return set(items)

    cdef dict _h_dict(self, Py_ssize_t count):
        cdef dict result = {}
        cdef bint fast = self._fast_unicode
        cdef const unsigned char* p
        cdef Py_ssize_t n, pos, size, start, index
        cdef int kind
        self._register(self._own(), result)
        for index in range(count):
            p = self._p
            n = self._n
            pos = self._pos
            # The common item: a pair whose key is a short str, read inline.
            if (fast and n - pos >= PAIR_UNICODE_LEN
                    and memcmp(p + pos, PAIR_UNICODE_HEAD, PAIR_UNICODE_LEN) == 0):
                if pos + PAIR_UNICODE_LEN >= n:  # where the pure reader's buf[i] fails
                    raise IndexError(_INDEX_ERROR_TEXT)
                size = p[pos + PAIR_UNICODE_LEN]
                start = pos + PAIR_UNICODE_LEN + 2
                if size < 0x80:
                    if start - 1 >= n:
                        raise IndexError(_INDEX_ERROR_TEXT)
                    if p[start - 1] == STRING and start + size <= n:
                        self._pos = start + size
                        key = self._key(p + start, size)
                        item = self._value()
                        result[key] = item
                        if self._pending:
                            self._fill(result, key, item)
                        continue
            if n - pos >= 2 and p[pos] == 0x02 and p[pos + 1] == LIST:
                self._pos = pos + 2
            else:
                kind = self._header()
                if kind != LIST or self._hval != 2:
                    raise JellyError("dictionary item is not a [key, value] pair")
            key = self._value()
            if type(key) is _Pending:
                raise JellyError("unsupported cycle through a dictionary key")
            item = self._value()
            try:
                result[key] = item
            except TypeError as exc:
                raise JellyError(f"unhashable dictionary key: {exc}") from None
            if self._pending:
                self._fill(result, key, item)
        return result

    cdef object _key(self, const unsigned char* text, Py_ssize_t size):
        """The str of a dictionary key's UTF-8 ``text``.

        Records repeat their keys: a short ASCII key is kept in a small
        table and handed out again (an equal str whose hash is already
        known) when the same bytes come back.
        """
        cdef PyObject* known
        cdef unsigned int slot
        if size == 0 or size > KEY_LONGEST:
            return self._text(text, size)
        slot = (<unsigned int>size * 31 + text[0] * 7 + text[size - 1] * 3
                + text[size >> 1]) & (KEY_SLOTS - 1)
        known = self._keys[slot]
        if (known != NULL and PyUnicode_GET_LENGTH(known) == size
                and memcmp(PyUnicode_DATA(known), text, size) == 0):
            return <object>known
        key = self._text(text, size)
        if PyUnicode_IS_ASCII(key):  # its characters are its UTF-8 bytes
            Py_INCREF(key)
            Py_XDECREF(known)
            self._keys[slot] = <PyObject*>key
        return key

    cdef object _text(self, const unsigned char* text, Py_ssize_t size):
        try:
            return PyUnicode_DecodeUTF8(<const char*>text, size, NULL)
        except UnicodeDecodeError as exc:
            raise JellyError(f"unicode value is not UTF-8: {exc}") from None

    cdef object _copy(self, object factory, Py_ssize_t count, object claim):
        if count != 1:
            raise JellyError(f"copy form needs 1 item(s), got {count}")
        obj = factory(self._value())
        self._register(claim, obj)
        return obj

    cdef object _registered(self, object entry, Py_ssize_t count, object claim):
        """Build an object whose tag the registry knows (a copy or a cache)."""
        form, target = entry
        if form == "factory":
            return self._copy(target, count, claim)
        cid = None
        if form == "cache":  # [tag, cache id, state]
            if self.ctx is None:
                raise JellyError("a cached object outside a connection")
            if count != 2:
                raise JellyError(f"cache form needs 2 item(s), got {count}")
            cid = self._raw()
            obj = self.ctx.unjelly_cache(target, cid)
        else:
            if count != 1:
                raise JellyError(f"copy form needs 1 item(s), got {count}")
            obj = target.__new__(target)  # restored, not constructed (as Twisted does)
        self._register(claim, obj)  # before the state: a cycle through it resolves
        state = self._value()
        try:
            obj.setCopyableState(state)
        except Exception as exc:  # the receiver's own code: refuse this copy, clearly
            raise JellyError(f"{target.__qualname__}.setCopyableState failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        if cid is not None and self.ctx is not None:  # the "cache" form
            self.ctx.cache_filled(cid, obj)
        return obj

    cdef object _h_reference(self, Py_ssize_t count):
        if count != 2:
            raise JellyError(f"reference needs 2 item(s), got {count}")
        number = self._raw()
        if type(number) is not int:
            raise JellyError("reference number is not an integer")
        self._claim = number
        obj = self._value()
        if self._claim == number:  # the value did not register itself
            self._claim = None
        if type(obj) is _Pending and (<_Pending>obj).items is None:
            raise JellyError(f"reference {number} refers to itself")
        if number not in self._refs:
            self._register(number, obj)
        return obj

    cdef object _h_dereference(self, Py_ssize_t count):
        if count != 1:
            raise JellyError(f"dereference needs 1 item(s), got {count}")
        number = self._raw()
        if type(number) is not int:
            raise JellyError("dereference number is not an integer")
        if number in self._refs:
            return self._refs[number]
        pending = self._pending.get(number)
        if pending is None:
            pending = self._pending[number] = _Pending()
        return pending


# -- The C interface (_creader.pxd): what the compiled broker core calls on
# its reader, as C calls instead of Python method calls when it is this
# Reader (else, a pure one that tests put in, through its methods).

cdef int reader_restart(reader, bytes buf, Py_ssize_t pos, security,
                        long_strings) except -1:
    if type(reader) is Reader:
        return (<Reader>reader)._restart(buf, pos, security, long_strings)
    reader.restart(buf, pos, security, long_strings)
    return 0


cdef Py_ssize_t reader_pos(reader) except -1:
    if type(reader) is Reader:
        return (<Reader>reader)._pos
    return reader.pos


cdef int reader_seek(reader, Py_ssize_t pos) except -1:
    if type(reader) is Reader:
        if pos < 0:
            raise ValueError("pos must not be negative")
        (<Reader>reader)._pos = pos
    else:
        reader.pos = pos
    return 0


cdef object reader_raw(reader):
    if type(reader) is Reader:
        return (<Reader>reader)._raw()
    return reader.raw()


cdef list reader_raw_fields(reader, Py_ssize_t count):
    if type(reader) is Reader:
        return (<Reader>reader)._raw_fields(count)
    return reader.raw_fields(count)


cdef object reader_jelly(reader):
    if type(reader) is Reader:
        return (<Reader>reader)._jelly()
    return reader.jelly()


cdef object reader_imported(reader):
    if type(reader) is Reader:
        return (<Reader>reader).imported
    return reader.imported
