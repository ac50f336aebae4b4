"""Jelly writing: Python values straight to Banana token bytes (layer L1).

See the theory of operation in :mod:`syncpb.jelly`.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any, Callable, Dict, Iterable, List, Optional

from .banana import (INT, LIST, PREFIX_LIMIT, SIZE_LIMIT, STRING, VOCAB, VOCAB_INDEX,
                     encode_int, encode_prefix, too_large)
from .errors import BananaError
from .jellybase import JellyContext, Unpersistable

__all__ = ["Writer"]

_FLOAT = struct.Struct(">d")


def _word(word: bytes, vocab: bool) -> bytes:
    """Token for a bare string, vocabulary-compressed when ``vocab``."""
    if vocab and word in VOCAB_INDEX:
        return bytes((VOCAB_INDEX[word], VOCAB))
    return encode_prefix(len(word)) + b"\x82" + word


def _string_token(data: bytes, vocab: bool, size_limit: int) -> bytes:
    if vocab:
        index = VOCAB_INDEX.get(data)
        if index is not None:
            return bytes((index, VOCAB))
    size = len(data)
    if size > size_limit:
        raise too_large("string", size, size_limit)
    if size < 128:
        return bytes((size, STRING)) + data
    return encode_prefix(size) + b"\x82" + data


_SMALL_INTS = tuple(bytes((i, INT)) for i in range(128))
#: A piece at least this long must not be copied into a joined message.
_LARGE_PIECE = 4096
#: Types whose Jelly form never takes part in reference numbering.
_SCALARS = frozenset({int, str, bytes, float, bool, type(None)})
_STR_CACHE_MAX = 8192
_STR_CACHEABLE = 40


class _Words:
    """The fixed tokens of one dialect, made once and shared by every Writer
    of that dialect (a per-connection copy would cost each idle connection)."""

    def __init__(self, vocab: bool) -> None:
        self.unicode = b"\x02\x80" + _word(b"unicode", vocab)
        self.none = b"\x01\x80" + _word(b"None", vocab)
        self.true = b"\x02\x80" + _word(b"boolean", vocab) + _word(b"true", vocab)
        self.false = b"\x02\x80" + _word(b"boolean", vocab) + _word(b"false", vocab)
        self.heads = {name: _word(name, vocab) for name in (
            b"list", b"tuple", b"dictionary", b"set", b"frozenset")}
        self.deref = b"\x02\x80" + _word(b"dereference", vocab)
        self.ref = b"\x03\x80" + _word(b"reference", vocab)


_WORDS = {False: _Words(False), True: _Words(True)}


class Writer:
    """Encoder of Python values for one connection (one dialect, one set of limits)."""

    def __init__(self, ctx: Optional[JellyContext] = None, vocab: bool = True,
                 size_limit: int = SIZE_LIMIT, prefix_limit: int = PREFIX_LIMIT) -> None:
        self.ctx = ctx
        self.vocab = vocab
        self.size_limit = size_limit
        self.prefix_limit = prefix_limit
        #: Set when a piece of at least _LARGE_PIECE bytes was written; the
        #: broker clears it before a message and joins small messages only.
        self.wrote_large = False
        self._str_cache: Dict[str, bytes] = {}
        self._pair_cache: Dict[str, bytes] = {}  # pair header + key, for str dict keys
        words = _WORDS[bool(vocab)]
        self._unicode = words.unicode
        self._none = words.none
        self._true = words.true
        self._false = words.false
        self._heads = words.heads
        self._list_head = words.heads[b"list"]
        self._short_list = min(128, size_limit + 1)  # counts whose header needs no checks
        self._deref = words.deref
        self._ref = words.ref
        self._refs: Dict[int, List[Any]] = {}
        self._next_ref = 0

    # -- entry points

    def jelly(self, obj: Any) -> bytes:
        """Return the bytes of one serialisation of ``obj``."""
        out: List[bytes] = []
        self.write(obj, out)
        return b"".join(out)

    def write(self, obj: Any, out: List[bytes]) -> None:
        """Append one serialisation of ``obj`` (fresh reference numbering).

        Raises:
            BananaError: a limit is broken or the nesting is too deep.
            TypeError: the value has no Jelly form.
        """
        if type(obj) in _SCALARS:  # nothing to share or number: no table needed
            self.value(obj, out)
            return
        if self._refs:
            self._refs = {}
        self._next_ref = 0
        try:
            self.value(obj, out)
        except RecursionError:
            raise BananaError("value nested too deeply to send") from None
        finally:
            if self._refs:
                self._refs = {}  # drop the objects it kept alive

    def write_items(self, head: bytes, items: Any, out: List[bytes]) -> None:
        """Append a fresh serialisation of a container no item can refer to
        (call arguments): no reference slot is reserved for the container."""
        if self._refs:
            self._refs = {}
        self._next_ref = 0
        try:
            count = len(items) + 1
            out.append((bytes((count, LIST)) if count < self._short_list
                        else self.list_header(count)) + self._heads[head])
            value = self.value
            for item in items:
                value(item, out)
        except RecursionError:
            raise BananaError("value nested too deeply to send") from None
        finally:
            if self._refs:
                self._refs = {}

    def word(self, word: bytes) -> bytes:
        """Token of a bare protocol string in this dialect."""
        return _string_token(word, self.vocab, self.size_limit)

    def int_token(self, n: int) -> bytes:
        """Token of a bare integer."""
        if 0 <= n < 128:
            return _SMALL_INTS[n]
        if 0 < n < 16384:
            return bytes((n & 0x7F, n >> 7, INT))
        if 0 < n < 2097152:  # request ids of a long-lived connection
            return bytes((n & 0x7F, (n >> 7) & 0x7F, n >> 14, INT))
        return encode_int(n, self.prefix_limit)

    # -- the value dispatcher (hot path)

    def value(self, obj: Any, out: List[bytes]) -> None:
        """Append the Jelly form of ``obj`` inside the current serialisation."""
        kind = type(obj)
        if kind is str:
            token = self._str_cache.get(obj)
            if token is None:
                self._str(obj, out)
            else:
                out.append(token)
        elif kind is int:
            if 0 <= obj < 128:
                out.append(_SMALL_INTS[obj])
            elif 0 < obj < 2097152:  # counters and ids: two or three prefix bytes
                out.append(bytes((obj & 0x7F, obj >> 7, INT)) if obj < 16384
                           else bytes((obj & 0x7F, (obj >> 7) & 0x7F, obj >> 14, INT)))
            else:
                out.append(encode_int(obj, self.prefix_limit))
        elif kind is bytes:
            if len(obj) < _LARGE_PIECE:
                out.append(_string_token(obj, self.vocab, self.size_limit))
            else:  # a large payload is a piece of its own: no copy until the final join
                out.append(encode_prefix(self._checked_size(len(obj))) + b"\x82")
                out.append(obj)
                self.wrote_large = True
        elif kind is float:
            out.append(b"\x84" + _FLOAT.pack(obj))
        elif obj is None:
            out.append(self._none)
        elif kind is bool:
            out.append(self._true if obj else self._false)
        else:
            handler = _DISPATCH.get(kind)
            if handler is not None:
                handler(self, obj, out)
            elif self.ctx is None or not self.ctx.jelly_object(obj, self, out):
                raise TypeError(
                    f"cannot send a {kind.__module__}.{kind.__qualname__} value over PB; "
                    "send a basic type, a Referenceable or a Copyable")

    def _checked_size(self, size: int) -> int:
        if size > self.size_limit:
            raise too_large("string", size, self.size_limit)
        return size

    def _str(self, obj: str, out: List[bytes]) -> None:
        token = self._str_cache.get(obj)
        if token is None:
            token = self._unicode + _string_token(obj.encode("utf-8"), self.vocab, self.size_limit)
            if len(token) >= _LARGE_PIECE:
                self.wrote_large = True
            elif len(obj) <= _STR_CACHEABLE:
                if len(self._str_cache) >= _STR_CACHE_MAX:
                    self._str_cache.clear()
                self._str_cache[obj] = token
        out.append(token)

    def begin_shared(self, obj: Any, out: List[bytes]) -> bool:
        """Start a value that takes part in reference numbering.

        Returns False (after writing a ``dereference``) when ``obj`` was
        already written in this serialisation; otherwise reserves the slot
        for a later ``reference`` header and returns True.
        """
        key = id(obj)
        entry = self._refs.get(key)
        if entry is not None:
            if not entry[1]:
                self._next_ref += 1
                entry[1] = self._next_ref
                out[entry[0]] = self._ref + self.int_token(entry[1])
            out.append(self._deref + self.int_token(entry[1]))
            return False
        self._refs[key] = [len(out), 0, obj]
        out.append(b"")
        return True

    def list_header(self, count: int) -> bytes:
        """Header of a Banana list of ``count`` items.

        Raises:
            BananaError: ``count`` exceeds the size limit.
        """
        if count > self.size_limit:
            raise too_large("list", count, self.size_limit)
        return bytes((count, LIST)) if count < 128 else encode_prefix(count) + b"\x80"

    def _sequence(self, obj: Any, out: List[bytes], head: bytes) -> None:
        if self.begin_shared(obj, out):
            count = len(obj) + 1
            out.append((bytes((count, LIST)) if count < self._short_list else self.list_header(count))
                       + self._heads[head])
            value = self.value
            for item in obj:
                value(item, out)

    def _list(self, obj: List[Any], out: List[bytes]) -> None:
        if self.begin_shared(obj, out):  # _sequence inlined: lists are the common case
            count = len(obj) + 1
            out.append((bytes((count, LIST)) if count < self._short_list else self.list_header(count))
                       + self._list_head)
            value = self.value
            for item in obj:
                value(item, out)

    def _tuple(self, obj: tuple[Any, ...], out: List[bytes]) -> None:
        self._sequence(obj, out, b"tuple")

    def _set(self, obj: set[Any], out: List[bytes]) -> None:
        self._sequence(obj, out, b"set")

    def _frozenset(self, obj: frozenset[Any], out: List[bytes]) -> None:
        self._sequence(obj, out, b"frozenset")

    def _dict(self, obj: Dict[Any, Any], out: List[bytes]) -> None:
        if self.begin_shared(obj, out):
            count = len(obj) + 1
            out.append((bytes((count, LIST)) if count < self._short_list else self.list_header(count))
                       + self._heads[b"dictionary"])
            value, cache = self.value, self._pair_cache
            for key, item in obj.items():
                token = cache.get(key) if type(key) is str else None
                if token is None and type(key) is str and len(key) <= _STR_CACHEABLE:
                    piece: List[bytes] = []
                    self._str(key, piece)
                    if len(cache) >= _STR_CACHE_MAX:
                        cache.clear()
                    token = cache[key] = b"\x02\x80" + piece[0]
                if token is not None:  # pair header and str key in one piece
                    out.append(token)
                else:
                    out.append(b"\x02\x80")
                    value(key, out)
                value(item, out)

    def shared(self, obj: Any) -> bool:
        """Was ``obj`` already written in this serialisation?"""
        return id(obj) in self._refs

    def cache_form(self, tag: bytes, cid: int, state: Any, obj: Any, out: List[bytes]) -> None:
        """Write ``[tag, cache id, state]``, a Cacheable's first send."""
        if self.begin_shared(obj, out):
            out.append(b"\x03\x80" + self.word(tag) + self.int_token(cid))
            self.value(state, out)

    def copy_form(self, tag: bytes, state: Any, obj: Any, out: List[bytes]) -> None:
        """Write ``[tag, state]`` for a pass-by-copy object ``obj``."""
        if self.begin_shared(obj, out):
            out.append(b"\x02\x80" + self.word(tag))
            self.value(state, out)

    def _unpersistable(self, obj: Unpersistable, out: List[bytes]) -> None:
        out.append(b"\x02\x80" + self.word(b"unpersistable")
                   + self.word(obj.reason.encode("utf-8")))

    def _decimal(self, obj: decimal.Decimal, out: List[bytes]) -> None:
        sign, digits, exponent = obj.as_tuple()
        if not isinstance(exponent, int):
            raise TypeError(f"cannot send Decimal {obj} over PB (only finite values)")
        coefficient = int("".join(map(str, digits)) or "0")
        out.append(b"\x03\x80" + self.word(b"decimal")
                   + self.int_token(-coefficient if sign else coefficient)
                   + self.int_token(exponent))

    def _text_form(self, head: bytes, fields: Iterable[int], out: List[bytes]) -> None:
        text = " ".join(map(str, fields)).encode("ascii")
        out.append(b"\x02\x80" + self.word(head) + self.word(text))

    def _datetime(self, obj: datetime.datetime, out: List[bytes]) -> None:
        if obj.tzinfo is not None:
            raise TypeError("cannot send a timezone-aware datetime over PB")
        self._text_form(b"datetime", (obj.year, obj.month, obj.day, obj.hour, obj.minute,
                                      obj.second, obj.microsecond), out)

    def _date(self, obj: datetime.date, out: List[bytes]) -> None:
        self._text_form(b"date", (obj.year, obj.month, obj.day), out)

    def _time(self, obj: datetime.time, out: List[bytes]) -> None:
        if obj.tzinfo is not None:
            raise TypeError("cannot send a timezone-aware time over PB")
        self._text_form(b"time", (obj.hour, obj.minute, obj.second, obj.microsecond), out)

    def _timedelta(self, obj: datetime.timedelta, out: List[bytes]) -> None:
        self._text_form(b"timedelta", (obj.days, obj.seconds, obj.microseconds), out)


#: The writer of each container and rich type, by exact type (shared by
#: every Writer; bound methods per instance would cost each connection).
_DISPATCH: Dict[type, Callable[[Writer, Any, List[bytes]], None]] = {
    list: Writer._list, tuple: Writer._tuple, dict: Writer._dict,
    set: Writer._set, frozenset: Writer._frozenset,
    decimal.Decimal: Writer._decimal, datetime.datetime: Writer._datetime,
    datetime.date: Writer._date, datetime.time: Writer._time,
    datetime.timedelta: Writer._timedelta, Unpersistable: Writer._unpersistable,
}
