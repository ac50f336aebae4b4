"""Jelly reading: a complete message's bytes straight to Python values (layer L1).

See the theory of operation in :mod:`syncpb.jelly`.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

from .banana import (FLOAT, INT, LIST, LONG_STRING, LONGINT, LONGNEG, NEG, PREFIX_LIMIT,
                     SIZE_LIMIT, STRING, VOCAB, VOCAB_INDEX, VOCABULARY)
from .errors import BananaError, InsecureJelly, ProtocolError
from .jellybase import Incomplete, JellyContext, JellyError, SecurityOptions, Unpersistable

__all__ = ["Reader"]

_FLOAT = struct.Struct(">d")


_UNICODE_HEAD = b"\x02\x80\x07\x82unicode"
_UNICODE_LEN = len(_UNICODE_HEAD)
_PAIR_UNICODE_HEAD = b"\x02\x80" + _UNICODE_HEAD  # a [key, value] pair with a str key
_PAIR_UNICODE_LEN = len(_PAIR_UNICODE_HEAD)


class _Pending:
    """A value not built yet: a ``dereference`` to an immutable container
    still being built, or a tuple holding such a value (``items`` set; it
    is built once its ``missing`` items are).

    ``fixups`` are the ``(container, key)`` slots to fill with the value; a
    container may itself be a pending tuple.
    """

    __slots__ = ("fixups", "items", "missing", "numbers")

    def __init__(self) -> None:
        self.fixups: List[Tuple[Any, Any]] = []
        self.items: Optional[List[Any]] = None
        self.missing = 0
        self.numbers: List[int] = []  # reference numbers naming this tuple


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
        if prefix_limit < 4:  # the inline paths read 2- and 3-byte prefixes unchecked
            raise ValueError("prefix_limit must be at least 4 bytes")
        self.prefix_limit = prefix_limit
        self.max_depth = max_depth
        self.depth = 0
        self.context: Any = None  # free for the broker (e.g. the perspective)
        self.imported: List[Any] = []  # import records touched, committed by the broker
        #: long string payloads cut out of ``buf``, by offset (see banana.cut_long_strings)
        self.long_strings: Optional[Dict[int, bytes]] = None
        self._refs: Dict[int, Any] = {}
        # dereferences not resolved yet by number; tuples waiting for them by (id,)
        self._pending: Dict[Any, _Pending] = {}
        self._claim: Optional[int] = None
        # The inline fast path reads strings of up to 127 bytes unchecked.
        self._fast_unicode = b"unicode" in security.types and size_limit >= 127
        self._fast_heads = vocab and _VOCAB_CONTAINER_HEADS <= security.types

    def restart(self, buf: bytes, pos: int, security: SecurityOptions,
                long_strings: Optional[Dict[int, bytes]]) -> None:
        """Reuse this reader for the next message (as if newly made for it)."""
        self.buf = buf
        self.security = security
        self.pos = self.start = pos
        self.depth = 0
        self.context = None
        if self.imported:
            self.imported = []
        self.long_strings = long_strings
        self._claim = None
        types = security.types  # the allow-list may have changed since
        self._fast_unicode = b"unicode" in types and self.size_limit >= 127
        self._fast_heads = self.vocab and _VOCAB_CONTAINER_HEADS <= types

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
            what = "string" if kind == STRING else "list"  # the framer's words, exactly
            raise BananaError(f"{what} header of {value} exceeds the size limit {self.size_limit}")
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
        if pos + 1 < len(buf) and buf[pos] < 0x80:  # the usual fields: small ints, short strings
            kind = buf[pos + 1]
            if kind == INT:
                self.pos = pos + 2
                return buf[pos]
            if kind < 0x80 and pos + 2 < len(buf):  # request ids: 2- and 3-byte prefixes
                third = buf[pos + 2]
                if third == INT:
                    self.pos = pos + 3
                    return buf[pos] | kind << 7
                if third < 0x80 and pos + 3 < len(buf) and buf[pos + 3] == INT:
                    self.pos = pos + 4
                    return buf[pos] | kind << 7 | third << 14
            if kind == STRING and self.size_limit >= 127:
                end = pos + 2 + buf[pos]
                if end <= len(buf):
                    self.pos = end
                    return buf[pos + 2:end]
        kind, value = self.header()
        if kind != LIST:
            return self._scalar(kind, value)
        self._enter()
        try:
            return [self.raw() for _ in range(value)]
        finally:
            self.depth -= 1

    def raw_fields(self, count: int) -> List[Any]:
        """Read ``count`` plain values (a message's protocol fields) in one call."""
        buf, size, raw = self.buf, len(self.buf), self.raw
        fields: List[Any] = []
        for _ in range(count):
            pos = self.pos
            if pos + 2 < size and buf[pos] < 0x80:  # the usual: small ints, short strings
                kind = buf[pos + 1]
                if kind == INT:
                    self.pos = pos + 2
                    fields.append(buf[pos])
                    continue
                if kind == STRING and self.size_limit >= 127:
                    end = pos + 2 + buf[pos]
                    if end <= size:
                        self.pos = end
                        fields.append(buf[pos + 2:end])
                        continue
            fields.append(raw())
        return fields

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
        pending = None
        try:
            value = self.value()
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
                if kind < 0x80:  # counters and ids: two or three prefix bytes
                    third = buf[pos + 2]
                    if third == INT:
                        self.pos = pos + 3
                        return first | kind << 7
                    if third < 0x80 and buf[pos + 3] == INT:
                        self.pos = pos + 4
                        return first | kind << 7 | third << 14
                    return self._general_value()
                if kind == STRING:
                    end = pos + 2 + first
                    if end > len(buf):
                        raise Incomplete()
                    self.pos = end
                    return buf[pos + 2:end]
                # Never look past a token: an empty list has no head (what
                # follows belongs to something else), and a head without a
                # prefix byte is one byte long. Both take the general path.
                if (kind == LIST and first and buf[pos + 2] < 0x80 and buf[pos + 3] == VOCAB
                        and self._fast_heads and self._claim is None):
                    handler = _VOCAB_CONTAINERS.get(buf[pos + 2])
                    if handler is not None and first == 1:  # empty: no kwargs, say
                        if self.depth >= self.max_depth:  # still one level of nesting
                            raise JellyError(f"value nested deeper than {self.max_depth} levels")
                        self.pos = pos + 4
                        return _EMPTY[buf[pos + 2]]()
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
                entry = self.security.registry.lookup(head)
                if entry is not None:
                    return self._registered(entry, count, claim)
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
        if type(obj) is _Pending:  # a tuple still waiting for items: its users wait too
            obj.numbers.append(number)
            if pending is not None:
                obj.fixups.extend(pending.fixups)
        elif pending is not None:
            self._resolve(pending.fixups, obj)

    def _deferred_tuple(self, items: List[Any]) -> _Pending:
        """A tuple with items not built yet (a cycle through it and a list or
        dict): a placeholder, filled in where it is used once it is built."""
        placeholder = _Pending()
        placeholder.items = items
        for index, item in enumerate(items):
            if type(item) is _Pending:
                item.fixups.append((placeholder, index))
                placeholder.missing += 1
        self._pending[(id(placeholder),)] = placeholder  # unresolved until built
        return placeholder

    def _resolve(self, fixups: List[Tuple[Any, Any]], obj: Any) -> None:
        """Put ``obj`` in every slot waiting for it, and build the deferred
        tuples that completes, and so on (a loop: chains may be long)."""
        work = [(fixups, obj)]
        while work:
            fixups, obj = work.pop()
            for container, key in fixups:
                if type(container) is not _Pending:
                    container[key] = obj
                    continue
                container.items[key] = obj  # type: ignore[index]
                container.missing -= 1
                if not container.missing:
                    built = tuple(container.items)  # type: ignore[arg-type]
                    del self._pending[(id(container),)]
                    for number in container.numbers:
                        self._refs[number] = built
                    work.append((container.fixups, built))

    def _fill(self, container: Any, key: Any, item: Any) -> None:
        if type(item) is _Pending:
            item.fixups.append((container, key))

    def _h_list(self, count: int) -> List[Any]:
        result: List[Any] = []
        self._register(self._own(), result)
        value = self.value
        for index in range(count):
            item = value()
            result.append(item)
            if self._pending:
                self._fill(result, index, item)
        return result

    def _check_items(self, items: List[Any], what: str) -> None:
        if self._pending and any(type(item) is _Pending for item in items):
            raise JellyError(f"unsupported cycle through a {what}")

    def _h_tuple(self, count: int) -> Any:  # a tuple, or a _Pending one
        items, value = [], self.value
        for _ in range(count):
            items.append(value())
        if self._pending and any(type(item) is _Pending for item in items):
            return self._deferred_tuple(items)
        return tuple(items)

    def _h_set(self, count: int) -> set[Any]:
        items, value = [], self.value
        for _ in range(count):
            items.append(value())
        if self._pending:
            self._check_items(items, "set")
        return set(items)

    def _h_frozenset(self, count: int) -> frozenset[Any]:
        items, value = [], self.value
        for _ in range(count):
            items.append(value())
        if self._pending:
            self._check_items(items, "frozenset")
        return frozenset(items)

    def _h_dict(self, count: int) -> Dict[Any, Any]:
        result: Dict[Any, Any] = {}
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

    def _registered(self, entry: Tuple[str, Any], count: int, claim: Optional[int]) -> Any:
        """Build an object whose tag the registry knows (a copy or a cache)."""
        form, target = entry
        if form == "factory":
            return self._copy(target, count, claim)
        cid = None
        if form == "cache":  # [tag, cache id, state]
            if self.ctx is None:
                raise JellyError("a cached object outside a connection")
            self._arity(count, 2, "cache form")
            cid = self.raw()
            obj = self.ctx.unjelly_cache(target, cid)
        else:
            self._arity(count, 1, "copy form")
            obj = target.__new__(target)  # restored, not constructed (as Twisted does)
        self._register(claim, obj)  # before the state: a cycle through it resolves
        state = self.value()
        try:
            obj.setCopyableState(state)
        except Exception as exc:  # the receiver's own code: refuse this copy, clearly
            raise JellyError(f"{target.__qualname__}.setCopyableState failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        if cid is not None and self.ctx is not None:  # the "cache" form
            self.ctx.cache_filled(cid, obj)
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
        year, month, day, hour, minute, second, micro = self._fields(count, "datetime", 7)
        try:
            return datetime.datetime(year, month, day, hour, minute, second, micro)
        except ValueError as exc:
            raise JellyError(f"bad datetime: {exc}") from None

    def _h_date(self, count: int) -> datetime.date:
        try:
            return datetime.date(*self._fields(count, "date", 3))
        except ValueError as exc:
            raise JellyError(f"bad date: {exc}") from None

    def _h_time(self, count: int) -> datetime.time:
        hour, minute, second, micro = self._fields(count, "time", 4)
        try:
            return datetime.time(hour, minute, second, micro)
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
        if type(obj) is _Pending and obj.items is None:
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

    def _h_cached(self, count: int) -> Any:
        self._arity(count, 1, "cached")
        if self.ctx is None:
            raise JellyError("a cached reference outside a connection")
        return self.ctx.unjelly_cached(self.raw())

    def _h_lcache(self, count: int) -> Any:
        self._arity(count, 1, "lcache")
        if self.ctx is None:
            raise JellyError("a cache reference outside a connection")
        return self.ctx.unjelly_lcache(self.raw())

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
    b"local": Reader._h_local, b"cached": Reader._h_cached, b"lcache": Reader._h_lcache,
}

# Containers whose head is a one-byte vocabulary token, read without the
# general dispatch when the allow-list accepts them all.
_VOCAB_CONTAINERS: Dict[int, Callable[[Reader, int], Any]] = {
    VOCAB_INDEX[b"list"]: Reader._h_list,
    VOCAB_INDEX[b"tuple"]: Reader._h_tuple,
    VOCAB_INDEX[b"dictionary"]: Reader._h_dict,
}
_VOCAB_CONTAINER_HEADS = frozenset({b"list", b"tuple", b"dictionary"})
_EMPTY: Dict[int, Callable[[], Any]] = {
    VOCAB_INDEX[b"list"]: list, VOCAB_INDEX[b"tuple"]: tuple, VOCAB_INDEX[b"dictionary"]: dict}
