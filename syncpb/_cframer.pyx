# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled Banana framer: :class:`syncpb.banana.Framer` in C (layer L1).

Theory of operation
-------------------
A Banana stream is a sequence of tokens ``prefix type [payload]``: the
prefix is an unsigned little-endian base-128 number (bytes 0x00-0x7F), the
type byte (0x80-0x87) ends it, STRING carries ``prefix`` payload bytes and
FLOAT eight. A LIST token's prefix counts the complete values after it, and
each complete top-level value is one message. The framer only finds where
a message ends in a chunked stream; it never builds values (the Reader does
that once the message is complete).

This class mirrors the pure-Python :class:`syncpb.banana.Framer`, which
stays the reference: the same :meth:`Framer.feed` results for every
chunking, the same :attr:`Framer.long_strings` records, the same
:class:`BananaError` classes and messages raised at the same token (bad
type byte, a prefix longer than ``prefix_limit``, a list or string header
over ``size_limit``, each checked as soon as its header is complete, in the
pure class's order). What differs is how the state is held:

* One counter instead of a stack of open-list counts. ``need`` is the
  number of tokens still needed to complete the top-level value: 1 when a
  message starts; every token fills one, and a LIST token of ``n`` items
  opens ``n`` more. The message ends after the token (and its payload)
  that brings ``need`` to 0. This is the pure class's stack summed (``need
  = sum of the open counts - open lists + 1``), and it empties exactly when
  the stack does, so the results are the same; but a token costs one
  subtraction instead of a walk down the stack, the branch that closed
  finished lists (the costly one: a misprediction whenever a list ended)
  is gone, and deep nesting needs no memory at all. ``need`` saturates at
  ``LLONG_MAX``, which no stream reaches.
* A chunk is scanned through a C pointer into its own buffer (bytes
  directly; bytearray, memoryview and other contiguous buffers through the
  buffer protocol), with no copy. The usual header (one prefix byte, or
  none) is read inline; longer ones go through the general reader.
* The payload still to skip and the message offset are C integers, so a
  long string or a float that runs past the chunk is skipped by arithmetic
  and never looked at.
* An incomplete header at the end of a chunk (at most ``prefix_limit``
  bytes) is kept as a small bytes object. The next chunk does not get it
  prepended (the pure class joins them, which copies the chunk): only that
  one header is completed from a small joined piece, and the scan goes on
  in the new chunk's own buffer.

Values fit in C integers: a prefix of at most nine significant base-128
digits (63 bits) is read as a ``long long``. A longer one (legal: the limit
is 64 bytes, 448 bits) is read as a Python int, only to check it against
``size_limit`` and report it exactly; if a limit that large lets it through,
the count or the skip is held as ``LLONG_MAX``. Limits that are not plain
ints are compared the Python way.

Every byte is looked at once at most whatever the chunking, so feeding a
message in pieces costs about what feeding it whole does.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from libc.limits cimport LLONG_MAX, LLONG_MIN
from libc.string cimport memcpy

from .errors import BananaError

__all__ = ["Framer", "LONG_STRING", "SIZE_LIMIT", "PREFIX_LIMIT"]

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

cdef enum:
    _LIST = 0x80
    _STRING = 0x82
    _FLOAT = 0x84
    _VOCAB = 0x87

#: Twisted's defaults, as in syncpb.banana (the tests check they agree).
SIZE_LIMIT = 640 * 1024
PREFIX_LIMIT = 64
#: Strings at least this long are recorded in ``long_strings`` (banana.LONG_STRING).
LONG_STRING = 32 * 1024
cdef long long _LONG_STRING = LONG_STRING


cdef object _slow_value(const unsigned char *p, Py_ssize_t start, Py_ssize_t stop):
    """The prefix ``p[start:stop]`` as a Python int (for values over 63 bits)."""
    cdef object value = 0
    cdef Py_ssize_t i = stop - 1
    while i >= start:
        value = (value << 7) | p[i]
        i -= 1
    return value


cdef inline bint _fast_value(const unsigned char *p, Py_ssize_t start, Py_ssize_t stop,
                             long long *out) noexcept:
    """Read the prefix ``p[start:stop]`` into ``out``; False if it needs more
    than 63 bits (more than nine significant base-128 digits)."""
    cdef Py_ssize_t i = stop
    cdef unsigned long long value = 0
    while i > start and p[i - 1] == 0:  # high-order zero digits (not canonical, legal)
        i -= 1
    if i - start > 9:
        return False
    while i > start:
        i -= 1
        value = (value << 7) | p[i]
    out[0] = <long long>value
    return True


cdef class Framer:
    """Find where a top-level Banana message ends in a chunked byte stream.

    The same interface and results as :class:`syncpb.banana.Framer` (see
    there and this module's theory of operation): :meth:`feed` each chunk
    as it arrives, get the offset within that chunk just past the message's
    end or ``None``; :meth:`reset` before the next message.
    """

    #: ``(offset in the message, size)`` of each string payload of at least
    #: :data:`LONG_STRING` bytes (a new list after every :meth:`reset`).
    cdef public list long_strings
    cdef object _size_limit       # as given (shown in messages)
    cdef object _prefix_limit
    cdef bint _size_exact         # _size_limit is an int: compare _climit in C
    cdef bint _prefix_exact
    cdef long long _climit        # the size limit, clamped to long long
    cdef Py_ssize_t _plimit       # the prefix limit, clamped to [-1, PY_SSIZE_T_MAX]
    cdef long long _need          # tokens still needed to complete the message
    cdef long long _skip          # payload bytes still to skip
    cdef bytes _carry             # an incomplete header from the last chunk
    cdef long long _offset        # message bytes fed before the current chunk
    cdef object _big              # a header's value, when over 63 bits

    def __cinit__(self) -> None:
        self._carry = b""
        self._need = 1

    def __init__(self, size_limit: object = SIZE_LIMIT,
                 prefix_limit: object = PREFIX_LIMIT) -> None:
        self.size_limit = size_limit
        self.prefix_limit = prefix_limit
        self.reset()

    @property
    def size_limit(self) -> object:
        """Longest list (items) or string (bytes) accepted."""
        return self._size_limit

    @size_limit.setter
    def size_limit(self, value: object) -> None:
        self._size_exact = type(value) is int
        if self._size_exact:
            self._climit = LLONG_MAX if value > LLONG_MAX else (
                LLONG_MIN if value < LLONG_MIN else value)
        self._size_limit = value

    @property
    def prefix_limit(self) -> object:
        """Most prefix bytes before a type byte."""
        return self._prefix_limit

    @prefix_limit.setter
    def prefix_limit(self, value: object) -> None:
        self._prefix_exact = type(value) is int
        if self._prefix_exact:
            self._plimit = PY_SSIZE_T_MAX if value > PY_SSIZE_T_MAX else (
                -1 if value < -1 else value)
        self._prefix_limit = value

    def reset(self) -> None:
        """Forget all progress: the next chunk starts a new message."""
        self._need = 1
        self._skip = 0
        self._carry = b""
        self._offset = 0
        self._big = None
        self.long_strings = []

    def feed(self, chunk: object) -> object:
        """Scan the next chunk; return where the message ends in it, or None.

        After a message ends the owner calls :meth:`reset` and feeds the
        rest of the chunk (if any) as the start of the next message.

        Raises:
            BananaError: bad type byte, over-long prefix or over-size header.
        """
        cdef Py_buffer view
        if PyBytes_CheckExact(chunk):
            return self._feed(<const unsigned char *>PyBytes_AS_STRING(chunk),
                              PyBytes_GET_SIZE(chunk))
        PyObject_GetBuffer(chunk, &view, PyBUF_SIMPLE)
        try:
            return self._feed(<const unsigned char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    # -- the scan

    cdef object _feed(self, const unsigned char *p, Py_ssize_t end):
        # The loop keeps the count, the limits and the position in locals;
        # self._need is written back before anything that can raise and
        # before every return, so the state after an error is the pure
        # framer's. A token's checks come before its count changes, as the
        # pure class checks a header before it touches its stack.
        cdef Py_ssize_t pos = 0, start, stop
        cdef long long origin = self._offset  # message offset of p[0]
        cdef long long value = 0
        cdef long long need = self._need
        cdef unsigned char kind = 0, c
        cdef bint big = False                 # the value is over 63 bits (in self._big)
        cdef bint pending = False             # a header completed from the carry
        # the size check is skipped when value <= climit; LLONG_MIN sends
        # every header to _check_size (a limit that is not an int)
        cdef long long climit = self._climit if self._size_exact else LLONG_MIN
        cdef bint one_byte_prefix = self._prefix_exact and self._plimit >= 1
        self._offset += end
        if PyBytes_GET_SIZE(self._carry):
            pos = self._carried_header(p, end, &kind, &value)
            if pos < 0:
                return None
            big = self._big is not None
            pending = True
        elif self._skip:  # a payload runs on: its token was counted already
            if self._skip > end:
                self._skip -= end
                return None
            pos = <Py_ssize_t>self._skip
            self._skip = 0
            if need == 0:
                self._need = 1
                return pos
        while True:
            if pending:
                pending = False
            else:
                if pos >= end:
                    self._need = need
                    return None
                c = p[pos]
                if c >= 0x80:  # no prefix
                    kind = c
                    value = 0
                elif pos + 1 < end and p[pos + 1] >= 0x80 and one_byte_prefix:
                    kind = p[pos + 1]  # the usual one-byte prefix
                    value = c
                    pos += 1
                else:
                    self._need = need
                    start = pos
                    stop = self._find_type(p, pos, end)
                    if stop < 0:
                        self._carry = PyBytes_FromStringAndSize(<const char *>(p + start),
                                                                end - start)
                        return None
                    kind = p[stop]
                    if not _fast_value(p, start, stop, &value):
                        big = True
                        self._big = _slow_value(p, start, stop)
                    pos = stop
                if kind > _VOCAB:
                    self._need = need
                    self._bad_type(kind)
                pos += 1
            if kind == _STRING:
                if value > climit or big:
                    self._need = need
                    self._check_size(value, "string", big)
                if value >= _LONG_STRING or big:
                    value = self._long_string(origin + pos, value, big)
                    big = False
                need -= 1
                if value > end - pos:
                    self._skip = value - (end - pos)
                    self._need = need
                    return None
                pos += <Py_ssize_t>value
            elif kind == _LIST:
                if value > climit or big:
                    self._need = need
                    self._check_size(value, "list", big)
                    if big:
                        value = LLONG_MAX
                        big = False
                        self._big = None
                if value >= LLONG_MAX - need:
                    need = LLONG_MAX
                else:
                    need += value - 1
            else:
                if kind == _FLOAT:
                    if 8 > end - pos:
                        self._skip = 8 - (end - pos)
                        self._need = need - 1
                        return None
                    pos += 8
                if big:  # an integer's magnitude: not the framer's business
                    big = False
                    self._big = None
                need -= 1
            if need == 0:  # the top-level value is complete: the message ends here
                self._need = 1
                return pos

    cdef Py_ssize_t _carried_header(self, const unsigned char *p, Py_ssize_t end,
                                    unsigned char *kind, long long *value) except -2:
        """Complete the header carried over from the last chunk with the
        first bytes of this one: return the offset just past its type byte
        in this chunk (setting ``kind``, ``value`` and, over 63 bits,
        ``_big``), or -1 if this chunk does not complete it either (it is
        then carried on)."""
        cdef Py_ssize_t carried = PyBytes_GET_SIZE(self._carry)
        cdef Py_ssize_t take = end, stop
        cdef bytes head
        cdef char *q
        self._big = None
        if self._prefix_exact and self._plimit < end:
            # prefix_limit + 1 bytes of prefix are an error wherever they
            # start, so the header ends (or fails) within this many bytes
            take = self._plimit + 1 if self._plimit >= 0 else 0
        head = PyBytes_FromStringAndSize(NULL, carried + take)
        q = PyBytes_AS_STRING(head)
        memcpy(q, PyBytes_AS_STRING(self._carry), carried)
        memcpy(q + carried, p, take)
        self._carry = b""
        stop = self._find_type(<const unsigned char *>q, 0, carried + take)
        if stop < 0:  # no type byte: then take == end (the limit was not reached)
            self._carry = head
            return -1
        kind[0] = <unsigned char>q[stop]
        if kind[0] > _VOCAB:
            self._bad_type(kind[0])
        if not _fast_value(<const unsigned char *>q, 0, stop, value):
            self._big = _slow_value(<const unsigned char *>q, 0, stop)
        return stop + 1 - carried  # the type byte is in this chunk: the carry is prefix only

    cdef Py_ssize_t _find_type(self, const unsigned char *p, Py_ssize_t start,
                               Py_ssize_t end) except -2:
        """The offset of the type byte of the header at ``start``, or -1 if
        it is not in ``p[:end]``; raises on a prefix over the limit."""
        cdef Py_ssize_t pos = start
        while pos < end and p[pos] < 0x80:
            pos += 1
            if self._prefix_exact:
                if pos - start > self._plimit:
                    self._long_prefix()
            elif pos - start > self._prefix_limit:
                self._long_prefix()
        return pos if pos < end else -1

    cdef int _check_size(self, long long value, str what, bint big) except -1:
        """Raise if a list or string header is over the size limit (``big``:
        the value is ``self._big``)."""
        cdef object shown = self._big if big else value
        if not big and self._size_exact:
            if value <= self._climit:
                return 0
        elif not (shown > self._size_limit):
            return 0
        raise BananaError(f"{what} header of {shown} exceeds the size limit {self._size_limit}")

    cdef long long _long_string(self, long long at, long long value, bint big) except -1:
        """Record a long string's payload at message offset ``at``; return
        its size as a C integer (LLONG_MAX for one over 63 bits)."""
        if big:
            self.long_strings.append((at, self._big))
            self._big = None
            return LLONG_MAX
        self.long_strings.append((at, value))
        return value

    cdef int _bad_type(self, unsigned char kind) except -1:
        raise BananaError(f"invalid Banana type byte 0x{kind:02x}")

    cdef int _long_prefix(self) except -1:
        raise BananaError(f"prefix longer than {self._prefix_limit} bytes")
