"""Jelly: Python values to Banana bytes and back, in one pass (sans-IO, L1).

Theory of operation
-------------------
Twisted builds a Banana tree from Python values (jelly) and then encodes the
tree (banana), and does both steps backwards when receiving. Here the two
steps are fused: :class:`Writer` appends token bytes for each value straight
into a list of byte pieces, and :class:`Reader` builds Python values straight
from the bytes of a complete message. No intermediate tree exists.

Shared and cyclic structures. Twisted numbers a container on its *second*
sighting and rewrites its first occurrence as ``['reference', n, form]``.
The writer reserves an empty piece before every container it starts; on a
second sighting it fills that slot with the ``reference`` header, so the
first occurrence is wrapped retroactively without a second pass. The reader
registers lists, dicts and objects under their reference number *before*
decoding their contents, so a cycle through them resolves directly; a
``dereference`` to an immutable that is still being built (a tuple reached
through its own child list) yields a placeholder that is patched once the
tuple exists.

Security. Every list head is checked against a :class:`SecurityOptions`
object (an allow-list, one per connection or shared on purpose, never a
module global) before anything is built; a refused head raises
:class:`~syncpb.errors.InsecureJelly`. Dotted type tags are looked up among
the factories registered on that object and are never imported by name.

PB objects (references, copies) are not known here: the broker passes a
*context* whose hooks encode objects this module does not know and decode
``remote``/``local`` forms.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Tuple

from .banana import (FLOAT, INT, LIST, LONG_STRING, LONGINT, LONGNEG, NEG, PREFIX_LIMIT,
                     SIZE_LIMIT, STRING, VOCAB, VOCAB_INDEX, VOCABULARY, encode_int,
                     encode_prefix)
from .errors import BananaError, InsecureJelly, ProtocolError

__all__ = [
    "Unpersistable",
    "SecurityOptions",
    "JellyContext",
    "Writer",
    "Reader",
    "Incomplete",
    "JellyError",
    "BASIC_TYPES",
]

_FLOAT = struct.Struct(">d")


class JellyError(ProtocolError):
    """A Jelly structure is malformed (wrong arity, bad text, unknown form)."""


class Incomplete(Exception):
    """Internal: the message being read is not complete yet."""


class Unpersistable:
    """Placeholder for a value the sender could not serialise.

    Twisted sends ``['unpersistable', reason]`` for values it cannot or may
    not send (instances of plain classes, subclasses of basic types).
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unpersistable({self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unpersistable) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash(self.reason)


#: List heads every PB connection accepts (Twisted's basic types plus PB's).
BASIC_TYPES = frozenset({
    b"None", b"unicode", b"boolean", b"list", b"tuple", b"dictionary",
    b"set", b"frozenset", b"decimal", b"datetime", b"date", b"time",
    b"timedelta", b"reference", b"dereference", b"unpersistable",
    b"persistent", b"remote", b"local",
})


class SecurityOptions:
    """The allow-list deciding which Jelly forms may be decoded.

    Args:
        types: allowed list heads; defaults to :data:`BASIC_TYPES`.

    A dotted type tag (a Copyable's class name) is accepted only when a
    factory was registered for it with :meth:`register`; the factory gets
    the decoded state and returns the local object. Nothing is ever
    imported or instantiated by name.
    """

    def __init__(self, types: Optional[Iterable[bytes]] = None) -> None:
        self.types = set(BASIC_TYPES if types is None else types)
        self.factories: Dict[bytes, Callable[[Any], Any]] = {}

    def allow_types(self, *heads: bytes) -> None:
        """Allow more list heads."""
        self.types.update(heads)

    def register(self, tag: bytes, factory: Callable[[Any], Any]) -> None:
        """Accept the copy form ``[tag, state]``, built by ``factory(state)``."""
        self.factories[tag] = factory

    def copy(self) -> "SecurityOptions":
        """Return an independent copy (for per-connection changes)."""
        other = SecurityOptions(self.types)
        other.factories.update(self.factories)
        return other


class JellyContext(Protocol):
    """What the broker lends the codec for PB's object forms."""

    def jelly_object(self, obj: Any, writer: "Writer", out: List[bytes]) -> bool:
        """Encode ``obj`` if it is a PB object; return False if unknown."""

    def unjelly_remote(self, oid: int, reader: "Reader") -> Any:
        """Return the proxy for the peer's object ``oid`` (``['remote', oid]``)."""

    def unjelly_local(self, oid: Any) -> Any:
        """Return our own object ``oid`` coming back (``['local', oid]``)."""


# ---------------------------------------------------------------- writing

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
        raise BananaError(f"string of {size} bytes exceeds the size limit {size_limit}")
    if size < 128:
        return bytes((size, STRING)) + data
    return encode_prefix(size) + b"\x82" + data


_SMALL_INTS = tuple(bytes((i, INT)) for i in range(128))
_STR_CACHE_MAX = 8192
_STR_CACHEABLE = 40


class Writer:
    """Encoder of Python values for one connection (one dialect, one set of limits)."""

    def __init__(self, ctx: Optional[JellyContext] = None, vocab: bool = True,
                 size_limit: int = SIZE_LIMIT, prefix_limit: int = PREFIX_LIMIT) -> None:
        self.ctx = ctx
        self.vocab = vocab
        self.size_limit = size_limit
        self.prefix_limit = prefix_limit
        self._str_cache: Dict[str, bytes] = {}
        self._pair_cache: Dict[str, bytes] = {}  # pair header + key, for str dict keys
        self._unicode = b"\x02\x80" + _word(b"unicode", vocab)
        self._none = b"\x01\x80" + _word(b"None", vocab)
        self._true = b"\x02\x80" + _word(b"boolean", vocab) + _word(b"true", vocab)
        self._false = b"\x02\x80" + _word(b"boolean", vocab) + _word(b"false", vocab)
        self._heads = {name: _word(name, vocab) for name in (
            b"list", b"tuple", b"dictionary", b"set", b"frozenset")}
        self._list_head = self._heads[b"list"]
        self._short_list = min(128, size_limit + 1)  # counts whose header needs no checks
        self._deref = b"\x02\x80" + _word(b"dereference", vocab)
        self._ref = b"\x03\x80" + _word(b"reference", vocab)
        self._refs: Dict[int, List[Any]] = {}
        self._next_ref = 0
        self._dispatch: Dict[type, Callable[[Any, List[bytes]], None]] = {
            list: self._list, tuple: self._tuple, dict: self._dict,
            set: self._set, frozenset: self._frozenset,
            decimal.Decimal: self._decimal, datetime.datetime: self._datetime,
            datetime.date: self._date, datetime.time: self._time,
            datetime.timedelta: self._timedelta, Unpersistable: self._unpersistable,
        }

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
        self._refs = {}
        self._next_ref = 0
        try:
            self.value(obj, out)
        except RecursionError:
            raise BananaError("value nested too deeply to send") from None
        finally:
            self._refs = {}

    def write_items(self, head: bytes, items: Any, out: List[bytes]) -> None:
        """Append a fresh serialisation of a container no item can refer to
        (call arguments): no reference slot is reserved for the container."""
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
            out.append(_SMALL_INTS[obj] if 0 <= obj < 128 else encode_int(obj, self.prefix_limit))
        elif kind is bytes:
            if len(obj) < 4096:
                out.append(_string_token(obj, self.vocab, self.size_limit))
            else:  # a large payload is a piece of its own: no copy until the final join
                out.append(encode_prefix(self._checked_size(len(obj))) + b"\x82")
                out.append(obj)
        elif kind is float:
            out.append(b"\x84" + _FLOAT.pack(obj))
        elif obj is None:
            out.append(self._none)
        elif kind is bool:
            out.append(self._true if obj else self._false)
        else:
            handler = self._dispatch.get(kind)
            if handler is not None:
                handler(obj, out)
            elif self.ctx is None or not self.ctx.jelly_object(obj, self, out):
                raise TypeError(
                    f"cannot send a {kind.__module__}.{kind.__qualname__} value over PB; "
                    "send a basic type, a Referenceable or a Copyable")

    def _checked_size(self, size: int) -> int:
        if size > self.size_limit:
            raise BananaError(f"string of {size} bytes exceeds the size limit {self.size_limit}")
        return size

    def _str(self, obj: str, out: List[bytes]) -> None:
        token = self._str_cache.get(obj)
        if token is None:
            token = self._unicode + _string_token(obj.encode("utf-8"), self.vocab, self.size_limit)
            if len(obj) <= _STR_CACHEABLE:
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
            raise BananaError(f"list of {count} items exceeds the size limit {self.size_limit}")
        return bytes((count, LIST)) if count < 128 else encode_prefix(count) + b"\x80"

    def _sequence(self, obj: Any, out: List[bytes], head: bytes) -> None:
        if self.begin_shared(obj, out):
            count = len(obj) + 1
            out.append((bytes((count, LIST)) if count < self._short_list else self.list_header(count))
                       + self._heads[head])
            value = self.value
            for item in obj:
                value(item, out)

    def _list(self, obj: list, out: List[bytes]) -> None:
        if self.begin_shared(obj, out):  # _sequence inlined: lists are the common case
            count = len(obj) + 1
            out.append((bytes((count, LIST)) if count < self._short_list else self.list_header(count))
                       + self._list_head)
            value = self.value
            for item in obj:
                value(item, out)

    def _tuple(self, obj: tuple, out: List[bytes]) -> None:
        self._sequence(obj, out, b"tuple")

    def _set(self, obj: set, out: List[bytes]) -> None:
        self._sequence(obj, out, b"set")

    def _frozenset(self, obj: frozenset, out: List[bytes]) -> None:
        self._sequence(obj, out, b"frozenset")

    def _dict(self, obj: dict, out: List[bytes]) -> None:
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


# ---------------------------------------------------------------- reading

_UNICODE_HEAD = b"\x02\x80\x07\x82unicode"
_UNICODE_LEN = len(_UNICODE_HEAD)
_PAIR_UNICODE_HEAD = b"\x02\x80" + _UNICODE_HEAD  # a [key, value] pair with a str key
_PAIR_UNICODE_LEN = len(_PAIR_UNICODE_HEAD)


class _Pending:
    """A ``dereference`` to an immutable container still being built."""

    __slots__ = ("fixups",)

    def __init__(self) -> None:
        self.fixups: List[Tuple[Any, Any]] = []


class Reader:
    """Decoder of one complete message held in ``buf``.

    The broker reads a message's protocol fields with the ``raw_*`` methods
    and its payloads with :meth:`jelly`. Reading past the end of ``buf``
    raises :class:`Incomplete`.
    """

    __slots__ = ("buf", "pos", "start", "security", "ctx", "vocab", "size_limit",
                 "prefix_limit", "max_depth", "depth", "context", "imported", "long_strings", "_refs",
                 "_pending", "_claim", "_fast_unicode", "_fast_heads")

    def __init__(self, buf: bytes, pos: int, security: SecurityOptions,
                 ctx: Optional[JellyContext] = None, vocab: bool = True,
                 size_limit: int = SIZE_LIMIT, prefix_limit: int = PREFIX_LIMIT,
                 max_depth: int = 200) -> None:
        self.buf = buf
        self.pos = self.start = pos
        self.security = security
        self.ctx = ctx
        self.vocab = vocab
        self.size_limit = size_limit
        self.prefix_limit = prefix_limit
        self.max_depth = max_depth
        self.depth = 0
        self.context: Any = None  # free for the broker (e.g. the perspective)
        self.imported: List[Any] = []  # import records touched, committed by the broker
        #: long string payloads cut out of ``buf``, by offset (see banana.cut_long_strings)
        self.long_strings: Optional[Dict[int, bytes]] = None
        self._refs: Dict[int, Any] = {}
        self._pending: Dict[int, _Pending] = {}
        self._claim: Optional[int] = None
        # The inline fast path reads strings of up to 127 bytes unchecked.
        self._fast_unicode = b"unicode" in security.types and size_limit >= 127
        self._fast_heads = vocab and _VOCAB_CONTAINER_HEADS <= security.types

    # -- tokens

    def header(self) -> Tuple[int, int]:
        """Read one token header: ``(type byte, prefix value)``."""
        buf, pos = self.buf, self.pos
        try:
            first = buf[pos]
            if first >= 0x80:
                self.pos = pos + 1
                return self._checked(first, 0)
            second = buf[pos + 1]
            if second >= 0x80:
                self.pos = pos + 2
                return self._checked(second, first)
            end = pos + 2
            while buf[end] < 0x80:
                end += 1
                if end - pos > self.prefix_limit:
                    raise BananaError(f"prefix longer than {self.prefix_limit} bytes")
        except IndexError:
            raise Incomplete() from None
        value = 0
        for i in range(end - 1, pos - 1, -1):
            value = (value << 7) | buf[i]
        self.pos = end + 1
        return self._checked(buf[end], value)

    def _checked(self, kind: int, value: int) -> Tuple[int, int]:
        if kind > VOCAB:
            raise BananaError(f"invalid Banana type byte 0x{kind:02x}")
        if (kind == STRING or kind == LIST) and value > self.size_limit:
            raise BananaError(f"header of {value} exceeds the size limit {self.size_limit}")
        return kind, value

    def _string_body(self, size: int) -> bytes:
        pos = self.pos
        if self.long_strings is not None and size >= LONG_STRING:
            taken = self.long_strings.get(pos)
            if taken is not None:  # assembled from the chunks; not in buf
                return taken
        end = pos + size
        if end > len(self.buf):
            raise Incomplete()
        self.pos = end
        return self.buf[pos:end]

    def _word(self, index: int) -> bytes:
        if not self.vocab:
            raise BananaError("vocabulary token outside the pb dialect")
        if 0 < index < len(VOCABULARY):
            return VOCABULARY[index]
        raise BananaError(f"unknown vocabulary index {index}")

    def _scalar(self, kind: int, value: int) -> Any:
        if kind == STRING:
            return self._string_body(value)
        if kind == INT or kind == LONGINT:
            return value
        if kind == NEG or kind == LONGNEG:
            return -value
        if kind == FLOAT:
            pos = self.pos
            if pos + 8 > len(self.buf):
                raise Incomplete()
            self.pos = pos + 8
            return _FLOAT.unpack_from(self.buf, pos)[0]
        return self._word(value)

    # -- raw (non-Jelly) values for protocol fields

    def raw(self) -> Any:
        """Read a plain Banana value (lists stay lists)."""
        buf, pos = self.buf, self.pos
        if pos + 1 < len(buf) and buf[pos] < 0x80:  # the usual field: a small int
            kind = buf[pos + 1]
            if kind == INT:
                self.pos = pos + 2
                return buf[pos]
        kind, value = self.header()
        if kind != LIST:
            return self._scalar(kind, value)
        self._enter()
        try:
            return [self.raw() for _ in range(value)]
        finally:
            self.depth -= 1

    def raw_int(self) -> int:
        """Read a bare integer field."""
        value = self.raw()
        if type(value) is not int:
            raise ProtocolError(f"expected an integer, got {type(value).__name__}")
        return value

    def raw_bytes(self) -> bytes:
        """Read a bare byte-string field."""
        value = self.raw()
        if type(value) is not bytes:
            raise ProtocolError(f"expected a byte string, got {type(value).__name__}")
        return value

    def list_header(self) -> int:
        """Read the header of a list field and return its item count."""
        kind, value = self.header()
        if kind != LIST:
            raise ProtocolError("expected a list")
        return value

    def skip(self) -> None:
        """Skip one complete value without building it."""
        remaining = 1
        while remaining:
            kind, value = self.header()
            remaining -= 1
            if kind == LIST:
                remaining += value
            elif kind == STRING:
                self._string_body(value)
            elif kind == FLOAT:
                self._scalar(kind, value)

    # -- Jelly

    def jelly(self) -> Any:
        """Read one serialisation (fresh reference numbering).

        Raises:
            Incomplete: the message is not complete yet.
            JellyError: the value is malformed, including values Python
                refuses to build (an unhashable set member, a year 10**9).
            InsecureJelly: a form the allow-list refuses.
        """
        self._refs = {}
        self._pending = {}
        try:
            value = self.value()
        except (TypeError, ValueError, OverflowError, ArithmeticError, LookupError) as exc:
            raise JellyError(f"malformed value: {exc}") from exc
        if self._pending:
            raise JellyError("dereference to a reference that was never defined")
        return value

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise JellyError(f"value nested deeper than {self.max_depth} levels")

    def value(self) -> Any:
        """Read one Jelly value inside the current serialisation.

        The most common tokens (small ints, floats, short strings and
        ``['unicode', ...]``) are read inline; everything else takes the
        general path through :meth:`header` and the handler table.
        """
        buf, pos = self.buf, self.pos
        try:
            first = buf[pos]
            if first < 0x80 and self.size_limit >= 127:
                kind = buf[pos + 1]
                if kind == INT:
                    self.pos = pos + 2
                    return first
                if kind == STRING:
                    end = pos + 2 + first
                    if end > len(buf):
                        raise Incomplete()
                    self.pos = end
                    return buf[pos + 2:end]
                if (kind == LIST and first > 1 and buf[pos + 3] == VOCAB and self._fast_heads
                        and self._claim is None):
                    handler = _VOCAB_CONTAINERS.get(buf[pos + 2])
                    if handler is not None:  # [list|tuple|dictionary, ...]: straight in
                        self.pos = pos + 4
                        self.depth += 1
                        if self.depth > self.max_depth:
                            raise JellyError(f"value nested deeper than {self.max_depth} levels")
                        try:
                            return handler(self, first - 1)
                        finally:
                            self.depth -= 1
                if (first == 2 and kind == LIST and self._fast_unicode
                        and buf.startswith(_UNICODE_HEAD, pos)):
                    size = buf[pos + _UNICODE_LEN]
                    if size < 0x80 and buf[pos + _UNICODE_LEN + 1] == STRING:
                        start = pos + _UNICODE_LEN + 2
                        end = start + size
                        if end > len(buf):
                            raise Incomplete()
                        self.pos = end
                        try:
                            return buf[start:end].decode("utf-8")
                        except UnicodeDecodeError as exc:
                            raise JellyError(f"unicode value is not UTF-8: {exc}") from None
            elif first == FLOAT:
                if pos + 9 > len(buf):
                    raise Incomplete()
                self.pos = pos + 9
                return _FLOAT.unpack_from(buf, pos + 1)[0]
        except IndexError:
            raise Incomplete() from None
        return self._general_value()

    def _general_value(self) -> Any:
        kind, value = self.header()
        if kind != LIST:
            return self._scalar(kind, value)
        if not value:
            raise JellyError("empty list where a Jelly value was expected")
        head_kind, head_value = self.header()
        if head_kind == STRING:
            head = self._string_body(head_value)
        elif head_kind == VOCAB:
            head = self._word(head_value)
        else:
            raise JellyError("Jelly list without a type name")
        self.depth += 1
        if self.depth > self.max_depth:
            raise JellyError(f"value nested deeper than {self.max_depth} levels")
        # The dispatch is inline so that one level of nesting costs three
        # Python frames (value, _general_value, handler), not more.
        try:
            count = value - 1
            claim, self._claim = self._claim, None
            factory = self.security.factories.get(head)
            if factory is not None:
                return self._copy(factory, count, claim)
            handler = _HANDLERS.get(head) if head in self.security.types else None
            if handler is None:
                if b"." in head:
                    module = head.rpartition(b".")[0].decode("utf-8", "replace")
                    raise InsecureJelly(f"Module {module} not allowed "
                                        f"(in type {head.decode('utf-8', 'replace')}).")
                raise InsecureJelly(repr(head))
            if claim is not None and (head == b"list" or head == b"dictionary"):
                self._claim = claim
            return handler(self, count)
        finally:
            self.depth -= 1

    def _arity(self, count: int, expected: int, what: str) -> None:
        if count != expected:
            raise JellyError(f"{what} needs {expected} item(s), got {count}")

    def _raw_text(self, count: int, what: str) -> bytes:
        self._arity(count, 1, what)
        value = self.raw()
        if type(value) is not bytes:
            raise JellyError(f"{what} needs a byte string")
        return value

    def _h_unicode(self, count: int) -> str:
        try:
            return self._raw_text(count, "unicode").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JellyError(f"unicode value is not UTF-8: {exc}") from None

    def _h_none(self, count: int) -> None:
        self._arity(count, 0, "None")

    def _h_boolean(self, count: int) -> bool:
        text = self._raw_text(count, "boolean")
        if text == b"true":
            return True
        if text == b"false":
            return False
        raise JellyError(f"bad boolean {text!r}")

    def _own(self) -> Optional[int]:
        claim, self._claim = self._claim, None
        return claim

    def _register(self, number: Optional[int], obj: Any) -> None:
        if number is None:
            return
        if number in self._refs:
            raise JellyError(f"reference {number} defined twice")
        self._refs[number] = obj
        pending = self._pending.pop(number, None)
        if pending is not None:
            for container, key in pending.fixups:
                container[key] = obj

    def _fill(self, container: Any, key: Any, item: Any) -> None:
        if type(item) is _Pending:
            item.fixups.append((container, key))

    def _h_list(self, count: int) -> list:
        result: list = []
        self._register(self._own(), result)
        value = self.value
        for index in range(count):
            item = value()
            result.append(item)
            if self._pending:
                self._fill(result, index, item)
        return result

    def _check_items(self, items: list, what: str) -> None:
        if self._pending and any(type(item) is _Pending for item in items):
            raise JellyError(f"unsupported cycle through a {what}")

    def _h_tuple(self, count: int) -> tuple:
        items, value = [], self.value
        for _ in range(count):
            items.append(value())
        self._check_items(items, "tuple")
        return tuple(items)

    def _h_set(self, count: int) -> set:
        items, value = [], self.value
        for _ in range(count):
            items.append(value())
        self._check_items(items, "set")
        return set(items)

    def _h_frozenset(self, count: int) -> frozenset:
        items, value = [], self.value
        for _ in range(count):
            items.append(value())
        self._check_items(items, "frozenset")
        return frozenset(items)

    def _h_dict(self, count: int) -> dict:
        result: dict = {}
        self._register(self._own(), result)
        value, buf = self.value, self.buf
        fast = self._fast_unicode
        for _ in range(count):
            pos = self.pos
            # The common item: a pair whose key is a short str, read inline.
            if fast and buf.startswith(_PAIR_UNICODE_HEAD, pos):
                size = buf[pos + _PAIR_UNICODE_LEN]
                start = pos + _PAIR_UNICODE_LEN + 2
                if size < 0x80 and buf[start - 1] == STRING and start + size <= len(buf):
                    self.pos = start + size
                    try:
                        key: Any = buf[start:start + size].decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise JellyError(f"unicode value is not UTF-8: {exc}") from None
                    item = value()
                    result[key] = item
                    if self._pending:
                        self._fill(result, key, item)
                    continue
            if buf[pos:pos + 2] == b"\x02\x80":
                self.pos = pos + 2
            else:
                kind, size = self.header()
                if kind != LIST or size != 2:
                    raise JellyError("dictionary item is not a [key, value] pair")
            key = value()
            if type(key) is _Pending:
                raise JellyError("unsupported cycle through a dictionary key")
            item = value()
            try:
                result[key] = item
            except TypeError as exc:
                raise JellyError(f"unhashable dictionary key: {exc}") from None
            if self._pending:
                self._fill(result, key, item)
        return result

    def _copy(self, factory: Callable[[Any], Any], count: int, claim: Optional[int]) -> Any:
        self._arity(count, 1, "copy form")
        obj = factory(self.value())
        self._register(claim, obj)
        return obj

    def _h_decimal(self, count: int) -> decimal.Decimal:
        self._arity(count, 2, "decimal")
        coefficient, exponent = self.raw(), self.raw()
        if type(coefficient) is not int or type(exponent) is not int:
            raise JellyError("decimal needs two integers")
        digits = tuple(int(d) for d in str(abs(coefficient)))
        return decimal.Decimal((1 if coefficient < 0 else 0, digits, exponent))

    def _fields(self, count: int, what: str, size: int) -> List[int]:
        text = self._raw_text(count, what)
        try:
            fields = [int(part) for part in text.split(b" ")]
        except ValueError:
            fields = []
        if len(fields) != size:
            raise JellyError(f"bad {what} text {text!r}")
        return fields

    def _h_datetime(self, count: int) -> datetime.datetime:
        try:
            return datetime.datetime(*self._fields(count, "datetime", 7))
        except ValueError as exc:
            raise JellyError(f"bad datetime: {exc}") from None

    def _h_date(self, count: int) -> datetime.date:
        try:
            return datetime.date(*self._fields(count, "date", 3))
        except ValueError as exc:
            raise JellyError(f"bad date: {exc}") from None

    def _h_time(self, count: int) -> datetime.time:
        try:
            return datetime.time(*self._fields(count, "time", 4))
        except ValueError as exc:
            raise JellyError(f"bad time: {exc}") from None

    def _h_timedelta(self, count: int) -> datetime.timedelta:
        days, seconds, micros = self._fields(count, "timedelta", 3)
        try:
            return datetime.timedelta(days=days, seconds=seconds, microseconds=micros)
        except OverflowError as exc:
            raise JellyError(f"bad timedelta: {exc}") from None

    def _h_reference(self, count: int) -> Any:
        self._arity(count, 2, "reference")
        number = self.raw()
        if type(number) is not int:
            raise JellyError("reference number is not an integer")
        self._claim = number
        obj = self.value()
        if self._claim == number:  # the value did not register itself
            self._claim = None
        if type(obj) is _Pending:
            raise JellyError(f"reference {number} refers to itself")
        if number not in self._refs:
            self._register(number, obj)
        return obj

    def _h_dereference(self, count: int) -> Any:
        self._arity(count, 1, "dereference")
        number = self.raw()
        if type(number) is not int:
            raise JellyError("dereference number is not an integer")
        if number in self._refs:
            return self._refs[number]
        pending = self._pending.get(number)
        if pending is None:
            pending = self._pending[number] = _Pending()
        return pending

    def _h_unpersistable(self, count: int) -> Unpersistable:
        self._arity(count, 1, "unpersistable")
        reason = self.raw()
        if type(reason) is bytes:
            reason = reason.decode("utf-8", "replace")
        return Unpersistable(str(reason))

    def _h_remote(self, count: int) -> Any:
        self._arity(count, 1, "remote")
        oid = self.raw()
        if type(oid) is not int or self.ctx is None:
            raise JellyError("bad remote reference")
        return self.ctx.unjelly_remote(oid, self)

    def _h_local(self, count: int) -> Any:
        self._arity(count, 1, "local")
        oid = self.raw()
        if self.ctx is None:
            raise JellyError("local reference outside a connection")
        return self.ctx.unjelly_local(oid)


_HANDLERS: Dict[bytes, Callable[[Reader, int], Any]] = {
    b"unicode": Reader._h_unicode, b"None": Reader._h_none, b"boolean": Reader._h_boolean,
    b"list": Reader._h_list, b"tuple": Reader._h_tuple, b"dictionary": Reader._h_dict,
    b"set": Reader._h_set, b"frozenset": Reader._h_frozenset, b"decimal": Reader._h_decimal,
    b"datetime": Reader._h_datetime, b"date": Reader._h_date, b"time": Reader._h_time,
    b"timedelta": Reader._h_timedelta, b"reference": Reader._h_reference,
    b"dereference": Reader._h_dereference, b"unpersistable": Reader._h_unpersistable,
    b"persistent": Reader._h_unpersistable, b"remote": Reader._h_remote,
    b"local": Reader._h_local,
}

# Containers whose head is a one-byte vocabulary token, read without the
# general dispatch when the allow-list accepts them all.
_VOCAB_CONTAINERS: Dict[int, Callable[[Reader, int], Any]] = {
    VOCAB_INDEX[b"list"]: Reader._h_list,
    VOCAB_INDEX[b"tuple"]: Reader._h_tuple,
    VOCAB_INDEX[b"dictionary"]: Reader._h_dict,
}
_VOCAB_CONTAINER_HEADS = frozenset({b"list", b"tuple", b"dictionary"})
