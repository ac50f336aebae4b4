"""Banana, PB's byte-level encoding of trees (sans-IO, layer L1).

Theory of operation
-------------------
A Banana stream is a sequence of tokens ``prefix type [payload]``: the
prefix is an unsigned integer in little-endian base 128 (bytes 0x00-0x7F),
the type byte (0x80-0x87) ends it, and only STRING and FLOAT carry a payload.
A LIST token's prefix counts the complete values that follow it. Each
complete top-level value is one message; there is no other framing.

This module holds the token vocabulary, the canonical encoder for plain
trees (lists, bytes, ints, floats) and :class:`Framer`, the incremental part
of decoding. The framer only finds where each top-level message ends; it
never builds values. The object-building decoder lives in
:mod:`syncpb.codec`, which reads a *complete* message in one recursive pass
and goes straight from bytes to Python objects (Banana and Jelly fused).
Splitting the work this way keeps both halves linear: the framer touches
each byte at most once however the stream is chunked (a string payload is
skipped by length, a partial prefix is at most 64 bytes), and the builder
never restarts.

:class:`Decoder` combines the two for plain trees and is what the golden
tests and the dialect handshake use. Limits are constructor arguments with
Twisted's defaults; nothing here is a module-level setting.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import speedups
from .errors import BananaError

__all__ = [
    "LIST",
    "INT",
    "STRING",
    "NEG",
    "FLOAT",
    "LONGINT",
    "LONGNEG",
    "VOCAB",
    "SIZE_LIMIT",
    "PREFIX_LIMIT",
    "VOCABULARY",
    "VOCAB_INDEX",
    "DIALECTS",
    "encode_prefix",
    "encode_int",
    "too_large",
    "encode",
    "Framer",
    "Decoder",
    "split_messages",
]

LIST = 0x80
INT = 0x81
STRING = 0x82
NEG = 0x83
FLOAT = 0x84
LONGINT = 0x85
LONGNEG = 0x86
VOCAB = 0x87

#: Twisted's default maximum length of one string and of one list.
SIZE_LIMIT = 640 * 1024
#: Twisted's default maximum number of prefix bytes before a type byte.
PREFIX_LIMIT = 64


def too_large(what: str, size: int, limit: int) -> BananaError:
    """The error for an outgoing ``what`` (``"string"``, ``size`` in bytes,
    or ``"list"``, in items) over the connection's size ``limit``, with the
    size, the limit and what to do about it."""
    unit = "bytes" if what == "string" else "items"
    default = ""
    if limit == SIZE_LIMIT:
        default = " (640 KiB, Twisted's default)" if unit == "bytes" else " (Twisted's default)"
    return BananaError(
        f"cannot send a {what} of {size} {unit}{_in_kib(size, unit)}: it exceeds the size "
        f"limit of {limit} {unit}{default} for any one string or list in a PB message; "
        f"send large data in pages (syncpb.util.StringPager, collected with "
        f"syncpb.util.get_all_pages: README \"Limits and bad input\") or raise the limit "
        f"on both sides (syncpb.Limits(size_limit=...) for connect() and Server(); "
        f"Banana.sizeLimit on a Twisted peer)")


def _in_kib(size: int, unit: str) -> str:
    if unit != "bytes" or size < 1024:
        return ""
    if size < 1024 * 1024:
        return f" ({size / 1024:.4g} KiB)"
    return f" ({size / (1024 * 1024):.4g} MiB)"

#: The ``pb`` dialect's vocabulary; index 0 is unused.
VOCABULARY: Tuple[bytes, ...] = (
    b"",
    b"None", b"class", b"dereference", b"reference", b"dictionary",
    b"function", b"instance", b"list", b"module", b"persistent",
    b"tuple", b"unpersistable", b"copy", b"cache", b"cached",
    b"remote", b"local", b"lcache", b"version", b"login",
    b"password", b"challenge", b"logged_in", b"not_logged_in", b"cachemessage",
    b"message", b"answer", b"error", b"decref", b"decache",
    b"uncache",
)
VOCAB_INDEX: Dict[bytes, int] = {w: i for i, w in enumerate(VOCABULARY) if i}

#: Strings at least this long that arrive over several reads are assembled
#: straight from the received chunks (see :func:`cut_long_strings`).
LONG_STRING = 32 * 1024

#: Dialects in order of preference, as a server offers them.
DIALECTS: Tuple[bytes, ...] = (b"pb", b"none")

_INT_MAX = 2**31 - 1
_INT_MIN = -(2**31)
_FLOAT = struct.Struct(">d")

Tree = Union[bytes, int, float, List[Any]]


def encode_prefix(n: int) -> bytes:
    """Return ``n`` (non-negative) as little-endian base-128 prefix bytes."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while n:
        out.append(n & 0x7F)
        n >>= 7
    return bytes(out)


def encode_int(n: int, prefix_limit: int = PREFIX_LIMIT) -> bytes:
    """Return the canonical Banana token for integer ``n``.

    Raises:
        BananaError: the magnitude needs more than ``prefix_limit`` bytes.
    """
    if 0 <= n < 128:
        return bytes((n, INT))
    if n >= 0:
        kind = INT if n <= _INT_MAX else LONGINT
    else:
        kind = NEG if n >= _INT_MIN else LONGNEG
        n = -n
    prefix = encode_prefix(n)
    if len(prefix) > prefix_limit:
        raise BananaError(f"integer too large to send: needs {len(prefix)} prefix bytes")
    return prefix + bytes((kind,))


def encode(tree: Tree, vocab: bool = True, size_limit: int = SIZE_LIMIT,
           prefix_limit: int = PREFIX_LIMIT) -> bytes:
    """Encode a plain Banana tree (lists/tuples, bytes, ints, floats).

    Args:
        tree: the value; lists and tuples both become Banana lists.
        vocab: compress vocabulary words (the ``pb`` dialect).

    Raises:
        BananaError: a value has no Banana form or breaks a limit.
    """
    out: List[bytes] = []
    _encode_into(tree, out, vocab, size_limit, prefix_limit)
    return b"".join(out)


def _encode_into(tree: Any, out: List[bytes], vocab: bool, size_limit: int,
                 prefix_limit: int) -> None:
    kind = type(tree)
    if kind is bytes:
        index = VOCAB_INDEX.get(tree) if vocab else None
        if index is not None:
            out.append(bytes((index, VOCAB)))
            return
        if len(tree) > size_limit:
            raise too_large("string", len(tree), size_limit)
        out.append(encode_prefix(len(tree)) + b"\x82" + tree)
    elif kind is int:
        out.append(encode_int(tree, prefix_limit))
    elif kind is float:
        out.append(b"\x84" + _FLOAT.pack(tree))
    elif kind is list or kind is tuple:
        if len(tree) > size_limit:
            raise too_large("list", len(tree), size_limit)
        out.append(encode_prefix(len(tree)) + b"\x80")
        for item in tree:
            _encode_into(item, out, vocab, size_limit, prefix_limit)
    else:
        raise BananaError(f"cannot encode {kind.__name__} in Banana")


class Framer:
    """Find where a top-level Banana message ends in a chunked byte stream.

    Chunks are fed as they arrive; :meth:`feed` returns the offset *within
    that chunk* just past the end of the current message, or ``None`` if
    the message goes on. The framer never needs earlier chunks again: it
    keeps the counts of the lists still open, how many payload bytes of a
    string or float remain to skip, and at most one incomplete token header
    (under ``prefix_limit + 1`` bytes) carried over to the next chunk. So
    each byte is looked at once, a long string's payload is skipped by
    arithmetic, and the caller can keep the chunks untouched and join them
    once when the message is complete. Limits and type bytes are checked
    as soon as a header is complete.
    """

    def __init__(self, size_limit: int = SIZE_LIMIT, prefix_limit: int = PREFIX_LIMIT) -> None:
        self.size_limit = size_limit
        self.prefix_limit = prefix_limit
        self.reset()

    def reset(self) -> None:
        """Forget all progress: the next chunk starts a new message."""
        self._open: List[int] = []  # remaining element counts of open lists
        self._skip = 0              # payload bytes still to skip
        self._carry = b""           # an incomplete header from the last chunk
        self._offset = 0            # message bytes fed before the current chunk
        #: ``(offset in the message, size)`` of each string payload of at
        #: least :data:`LONG_STRING` bytes, so the owner can assemble it
        #: straight from the chunks.
        self.long_strings: List[Tuple[int, int]] = []

    def feed(self, chunk: bytes) -> Optional[int]:
        """Scan the next chunk; return where the message ends in it, or None.

        After a message ends the owner calls :meth:`reset` and feeds the
        rest of the chunk (if any) as the start of the next message.

        Raises:
            BananaError: bad type byte, over-long prefix or over-size header.
        """
        base = len(self._carry)
        buf = self._carry + chunk if base else chunk
        self._carry = b""
        origin = self._offset - base  # message offset of buf[0]
        self._offset += len(chunk)
        pos, end = 0, len(buf)
        if self._skip:
            pos = min(self._skip, end)
            self._skip -= pos
            if self._skip:
                return None
            if self._value_done():
                return pos - base
        while pos < end:
            header = _read_header(buf, pos, end, self.prefix_limit)
            if header is None:
                self._carry = bytes(buf[pos:])  # never a view of the caller's buffer
                return None
            kind, value, pos = header
            if kind == LIST:
                self._check_size(value, "list")
                if value:
                    self._open.append(value)
                    continue
            elif kind == STRING or kind == FLOAT:
                size = 8 if kind == FLOAT else value
                if kind == STRING:
                    self._check_size(value, "string")
                    if value >= LONG_STRING:
                        self.long_strings.append((origin + pos, value))
                if pos + size > end:
                    self._skip = pos + size - end
                    return None
                pos += size
            if self._value_done():
                return pos - base
        return None

    def _value_done(self) -> bool:
        """One value completed: close finished lists; True at the top level."""
        open_lists = self._open
        while open_lists:
            open_lists[-1] -= 1
            if open_lists[-1]:
                return False
            open_lists.pop()
        return True

    def _check_size(self, value: int, what: str) -> None:
        if value > self.size_limit:
            raise BananaError(f"{what} header of {value} exceeds the size limit {self.size_limit}")


def cut_long_strings(chunks: Sequence[Union[bytes, memoryview]],
                     long_strings: List[Tuple[int, int]]) -> Tuple[bytes, Dict[int, bytes]]:
    """Join a message's chunks with its long string payloads taken out.

    Returns the message without those payloads and each payload as its own
    bytes object, keyed by the offset where it would start in the returned
    message. Each payload is copied once, into the object the receiver
    keeps; a long string otherwise costs a joined buffer and a slice of it.
    The chunks inside a span are taken whole (only the two at its edges are
    sliced), so a message of many small chunks (a 600 KiB string in 1,460-
    byte segments) costs one join per piece, not Python work per chunk.
    """
    ends = list(accumulate(map(len, chunks)))  # message offset just past each chunk
    rest: List[Any] = []
    strings: Dict[int, bytes] = {}
    position, cut = 0, 0  # message offset up to which everything is placed; bytes removed
    for start, size in long_strings:
        rest += _span(chunks, ends, position, start)
        strings[start - cut] = b"".join(_span(chunks, ends, start, start + size))
        cut += size
        position = start + size
    rest += _span(chunks, ends, position, ends[-1] if ends else 0)
    return b"".join(rest), strings


def _span(chunks: Sequence[Union[bytes, memoryview]], ends: List[int], begin: int,
          stop: int) -> List[Any]:
    """The pieces of ``chunks`` holding message bytes ``begin`` to ``stop``."""
    if begin >= stop:
        return []
    first = bisect_right(ends, begin)  # the chunk holding byte begin
    last = bisect_left(ends, stop)     # the chunk holding byte stop - 1
    head = chunks[first]
    skip = begin - (ends[first] - len(head))
    if first == last:
        keep = stop - (ends[first] - len(head))
        return [head if skip == 0 and keep == len(head) else memoryview(head)[skip:keep]]
    parts: List[Any] = [memoryview(head)[skip:] if skip else head]
    parts += chunks[first + 1:last]
    tail = chunks[last]
    keep = stop - (ends[last] - len(tail))
    parts.append(tail if keep == len(tail) else memoryview(tail)[:keep])
    return parts


def split_messages(data: bytes, size_limit: int = SIZE_LIMIT,
                   prefix_limit: int = PREFIX_LIMIT) -> Tuple[List[bytes], bytes]:
    """Cut ``data`` into complete messages; return them and the unfinished rest."""
    framer, messages = Framer(size_limit, prefix_limit), []
    while data:
        end = framer.feed(data)
        if end is None:
            break
        messages.append(data[:end])
        data = data[end:]
        framer.reset()
    return messages, data


def _read_header(buf: Union[bytes, bytearray], pos: int, end: int,
                 prefix_limit: int) -> Optional[Tuple[int, int, int]]:
    """Read one token header at ``pos``: ``(type, prefix value, offset after)``.

    Returns ``None`` when the header is not complete yet.

    Raises:
        BananaError: invalid type byte or a prefix longer than the limit.
    """
    start = pos
    while pos < end and buf[pos] < 0x80:
        pos += 1
        if pos - start > prefix_limit:
            raise BananaError(f"prefix longer than {prefix_limit} bytes")
    if pos >= end:
        return None
    kind = buf[pos]
    if kind > VOCAB:
        raise BananaError(f"invalid Banana type byte 0x{kind:02x}")
    value = 0
    for i in range(pos - 1, start - 1, -1):
        value = (value << 7) | buf[i]
    return kind, value, pos + 1


class Decoder:
    """Incremental decoder of plain Banana trees (no Jelly).

    Used for the dialect handshake and for testing against recorded
    streams. ``vocab`` selects whether VOCAB tokens are allowed (the ``pb``
    dialect); before a dialect is chosen they are an error, as in Twisted.
    """

    def __init__(self, vocab: bool = True, size_limit: int = SIZE_LIMIT,
                 prefix_limit: int = PREFIX_LIMIT) -> None:
        self.vocab = vocab
        self._chunks: List[bytes] = []
        self._framer = Framer(size_limit, prefix_limit)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return sum(map(len, self._chunks))

    def feed(self, data: bytes) -> List[Tree]:
        """Add ``data``; return every message it completes, in order."""
        out: List[Tree] = []
        data = bytes(data)
        while data:
            end = self._framer.feed(data)
            if end is None:
                self._chunks.append(data)
                break
            self._chunks.append(data[:end])
            message = b"".join(self._chunks)
            self._chunks, data = [], data[end:]
            self._framer.reset()
            out.append(read_tree(message, 0, self.vocab)[0])
        return out


def read_tree(buf: bytes, pos: int, vocab: bool) -> Tuple[Tree, int]:
    """Build the plain tree of the complete value at ``pos``.

    Iterative (no recursion limit). The value must be complete and already
    checked by a :class:`Framer`.

    Raises:
        BananaError: a VOCAB token when ``vocab`` is false, or an unknown index.
    """
    stack: List[Tuple[List[Tree], int]] = []
    end = len(buf)
    while True:
        header = _read_header(buf, pos, end, end)
        if header is None:
            raise BananaError("truncated Banana value")
        kind, value, pos = header
        item: Tree
        if kind == LIST:
            if value:
                stack.append(([], value))
                continue
            item = []
        elif kind == STRING:
            item = buf[pos:pos + value]
            pos += value
        elif kind == INT or kind == LONGINT:
            item = value
        elif kind == NEG or kind == LONGNEG:
            item = -value
        elif kind == FLOAT:
            item = _FLOAT.unpack_from(buf, pos)[0]
            pos += 8
        else:
            item = vocab_word(value, vocab)
        while stack:
            items, count = stack[-1]
            items.append(item)
            if len(items) < count:
                break
            stack.pop()
            item = items
        else:
            return item, pos


def vocab_word(index: int, vocab: bool = True) -> bytes:
    """Return the vocabulary word with ``index``.

    Raises:
        BananaError: vocabulary is not in effect, or the index is unknown.
    """
    if not vocab:
        raise BananaError("vocabulary token outside the pb dialect")
    if 0 < index < len(VOCABULARY):
        return VOCABULARY[index]
    raise BananaError(f"unknown vocabulary index {index}")


def offer(dialects: Sequence[bytes] = DIALECTS) -> bytes:
    """Return the server's dialect offer, encoded without vocabulary."""
    return encode(list(dialects), vocab=False)


#: The pure-Python framer, the reference the compiled one is tested against.
PyFramer = Framer
_compiled = speedups.load("_cframer")
if _compiled is not None:  # the same class in C (syncpb/_cframer.pyx)
    Framer = _compiled.Framer  # type: ignore[misc]
