"""The broker's hot paths: calls, answers and whole messages (layer L1.95,
sans-IO).

Theory of operation
-------------------
:class:`BrokerCore` is the base of :class:`~syncpb.broker.Broker`. It holds
the state every call touches (the output list, the request ids waiting for
answers, the reader and writer, the message heads) and the paths every
small call takes: :meth:`~BrokerCore.call` encodes a call,
:meth:`~BrokerCore.answer` a small answer, :meth:`~BrokerCore.receive_data`
decodes a message that arrived whole and :meth:`~BrokerCore._handle` tells
an answer or a call from the other commands. Everything else (handshake,
errors, references, caches, messages in pieces) is the broker's, reached
through ``self``, so that a subclass (or a test) may override it.

This module is the reference. ``syncpb/_cbrokercore.pyx`` is its compiled
twin, the same methods with the state in C fields, used unless
``SYNCPB_PURE=1`` or it was not built (see :mod:`syncpb.speedups`); the
broker tests run against both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .cache import RemoteCache
from .errors import Error, InsecureJelly, NoSuchMethod, ProtocolError
from .events import AnswerReceived, CallReceived
from .flavors import Referenceable
from .jellybase import Incomplete, JellyError

if TYPE_CHECKING:
    from .jelly import Reader

__all__ = ["BrokerCore", "CORE_SLOTS"]

#: The broker's states (its ``_state``): awaiting the dialect offer, the
#: dialect choice; ready; dead.
_AWAIT_OFFER, _AWAIT_CHOICE, _READY, _DEAD = range(4)

Event = Any

#: The attributes the core holds (the compiled twin's C fields).
CORE_SLOTS = ("_state", "released", "_out", "_pending_exports", "_chunks", "_perspective",
              "_writer", "_reader", "security", "_long_strings", "_assembly", "_max_incoming",
              "_empty_kwargs", "_message_head", "_cachemessage_head", "_answer_head",
              "_call_targets", "_names", "_exports", "_waiting", "_next_request", "_incoming",
              "_frame_first")


class BrokerCore:
    """The state and hot paths of :class:`~syncpb.broker.Broker` (its base)."""

    __slots__ = CORE_SLOTS

    _state: int
    released: List[Any]
    _out: List[bytes]
    _pending_exports: List[Any]
    _chunks: List[bytes]
    _perspective: Any
    _writer: Any
    _reader: Any
    security: Any
    _long_strings: Optional[Dict[int, bytes]]
    _assembly: Any
    _max_incoming: Optional[int]
    _empty_kwargs: bytes
    _message_head: bytes
    _cachemessage_head: bytes
    _answer_head: bytes
    _call_targets: Dict[Tuple[Any, str], bytes]
    _names: Dict[bytes, str]
    _exports: Dict[Any, List[Any]]
    _waiting: set[int]
    _next_request: int
    _incoming: int
    _frame_first: bool

    if TYPE_CHECKING:  # the broker's own, reached through self
        def _send_decrefs(self) -> None: ...
        def _rollback_exports(self) -> None: ...
        def _commit_exports(self) -> None: ...
        def _answer_slow(self, request_id: Any, value: Any, perspective: Any) -> None: ...
        def _handshake(self, buf: bytes, pos: int, events: List[Event]) -> int: ...
        def _check_waiting(self, request_id: Any) -> Any: ...
        def _undecodable(self, request_id: int, exc: Exception, events: List[Event]) -> Any: ...
        def _commit(self, reader: Any) -> None: ...
        def cache_target(self, cid: Any) -> Any: ...
        def _fields(self, reader: Any, count: int, expected: int, command: str) -> None: ...
        def _method_name(self, name: Any) -> Tuple[str, bool]: ...
        def _reply_error(self, request_id: Any, answer_required: bool,
                         exc: BaseException) -> None: ...
        def _violation(self, reason: str, events: List[Event]) -> None: ...
        def _rest_of(self, reader: Any) -> None: ...
        def _refuse_call(self, request_id: Any, answer_required: bool, limit: int) -> None: ...
        def _receive(self, data: bytes, events: List[Event], pos: int = 0) -> None: ...
        def _incomplete(self, data: bytes, pos: int) -> None: ...
        def _wait_for_end(self, data: bytes, pos: int) -> bool: ...
        def _die(self, exc: BaseException, events: List[Event]) -> None: ...
        _commands: Dict[bytes, Any]

    @property
    def has_output(self) -> bool:
        """True when :meth:`pieces_to_send` would return something."""
        return bool(self._out or self.released)

    def pieces_to_send(self) -> List[bytes]:
        """Return (and forget) the bytes produced so far, as pieces.

        Writing the pieces with scatter/gather I/O spares a copy of large
        payloads (a bytes value of its own is one piece).
        """
        if self.released:
            self._send_decrefs()
        out, self._out = self._out, []
        return out

    def receive_data(self, data: bytes) -> List[Event]:
        """Feed received bytes; return the events they complete, in order."""
        events: List[Event] = []
        if self._state == _DEAD or not data:
            return events
        try:
            if type(data) is not bytes:
                data = bytes(data)
            if self._frame_first or self._chunks or self._assembly is not None:
                self._receive(data, events)
                return events
            try:  # the usual case, written out: a whole message, decoded in place
                pos = self._handle(data, 0, events)
            except Incomplete:
                self._incomplete(data, 0)
                return events
            except (ProtocolError, InsecureJelly):
                if self._wait_for_end(data, 0):
                    return events
                raise
            if pos < len(data) and self._state != _DEAD:
                self._receive(data, events, pos)
        except (ProtocolError, InsecureJelly) as exc:
            self._die(exc, events)
        except RecursionError:
            self._die(ProtocolError("value nested too deeply to decode"), events)
        return events

    def _handle(self, buf: bytes, pos: int, events: List[Event]) -> int:
        if self._state != _READY:
            return self._handshake(buf, pos, events)
        reader: Reader = self._reader  # one per connection
        reader.restart(buf, pos, self.security, self._long_strings)  # as if new
        if buf.startswith(self._answer_head, pos):
            reader.pos = pos + len(self._answer_head)
            self._on_answer(reader, 2, events)
            return reader.pos
        if buf.startswith(self._message_head, pos):
            reader.pos = pos + len(self._message_head)
            self._on_message(reader, 6, events)
            return reader.pos
        count = reader.list_header()
        if count < 1:
            raise ProtocolError("empty top-level message")
        command = reader.raw()
        handler = self._commands.get(command) if type(command) is bytes else None
        if handler is None:
            raise ProtocolError(f"unknown PB command {command!r}")
        handler(self, reader, count - 1, events)
        return reader.pos

    def _on_answer(self, reader: Any, count: int, events: List[Event]) -> None:
        """An ``answer`` message's fields: settle the waiting request (the
        hot path of every blocking call)."""
        if count != 2:
            self._fields(reader, count, 2, "answer")
        request_id = reader.raw()
        waiting = self._waiting
        if type(request_id) is not int or request_id not in waiting:
            self._check_waiting(request_id)  # raises
        try:
            value = reader.jelly()
        except (InsecureJelly, JellyError) as exc:
            self._undecodable(request_id, exc, events)
        if reader.imported:
            self._commit(reader)
        waiting.discard(request_id)  # only once the whole message is in
        events.append(AnswerReceived(request_id, value))

    def call(self, oid: Any, name: str, args: Tuple[Any, ...] = (),
             kwargs: Optional[Dict[str, Any]] = None,
             answer_required: bool = True, perspective: Any = None, cache: bool = False) -> int:
        """Queue a call of ``name`` on the peer's object ``oid``.

        ``perspective`` is passed to the arguments' ``getStateToCopyFor``.
        With ``cache``, ``oid`` is a cache id and the call is a
        ``cachemessage`` to the peer's RemoteCache (``observe_`` methods).

        Returns:
            the request id; its answer arrives as an event with that id.

        Raises:
            ProtocolError: the connection is not ready or is dead.
            BananaError, TypeError, Error: an argument cannot be sent
                (nothing is queued and no id is used).
        """
        if self._state != _READY:
            raise ProtocolError("connection is not ready for calls")
        if self.released:  # a proxy dropped before this call is released before it
            self._send_decrefs()
        self._perspective = perspective
        # The arguments: a tuple and a dictionary, two serialisations. The
        # tuple is new and unreachable from its items, so it needs no
        # reference slot; empty keyword arguments are a constant.
        writer = self._writer
        body: List[bytes] = []
        if self._pending_exports:
            self._pending_exports = []
        writer.wrote_large = False  # a large piece keeps the message in pieces
        try:
            writer.write_items(b"tuple", args, body)
            if kwargs:
                writer.write(dict(kwargs), body)
            else:
                body.append(self._empty_kwargs)
        except BaseException:
            self._rollback_exports()
            raise
        if self._pending_exports:
            self._commit_exports()
        self._next_request += 1
        request_id = self._next_request
        target = self._call_targets.get((oid, name))
        if target is None:
            target = ((writer.int_token(oid) if type(oid) is int else writer.word(oid))
                      + writer.word(name.encode("utf-8")))
            if len(self._call_targets) >= 1024:
                self._call_targets.clear()
            self._call_targets[(oid, name)] = target
        parts = [self._cachemessage_head if cache else self._message_head,
                 writer.int_token(request_id), target,
                 b"\x01\x81" if answer_required else b"\x00\x81"]
        if len(body) <= 8 and not writer.wrote_large:  # small: one piece, one plain send
            parts.extend(body)
            self._out.append(b"".join(parts))
        else:
            self._out.append(b"".join(parts))
            self._out.extend(body)
        if answer_required:
            self._waiting.add(request_id)
        return request_id

    def answer(self, request_id: Any, value: Any, perspective: Any = None) -> None:
        """Queue the answer to the peer's call ``request_id``.

        ``perspective`` is the :class:`CallReceived`'s: copies in the answer
        are made for it. A value that cannot be sent is reported to the
        caller as an error instead (Twisted would drop the connection).
        """
        if self._incoming:
            self._incoming -= 1
        if self._state != _READY:
            return
        if self.released:
            self._send_decrefs()
        kind = type(value)
        if kind is int and 0 <= value < 2097152:  # a small int: its token is int_token's
            int_token = self._writer.int_token
            self._out.append(self._answer_head + int_token(request_id) + int_token(value))
            return
        if value is None or kind is bool or kind is float:
            # A plain answer (the usual small result): one token, nothing to
            # share, export or roll back.
            writer = self._writer
            out: List[bytes] = []
            writer.value(value, out)
            self._out.append(self._answer_head + writer.int_token(request_id) + out[0])
            return
        self._answer_slow(request_id, value, perspective)

    def _on_message(self, reader: Any, count: int, events: List[Event],
                    cache: bool = False) -> None:
        if count != 6:
            self._fields(reader, count, 6, "cachemessage" if cache else "message")
        request_id, oid, name, answer_required = reader.raw_fields(4)
        if type(request_id) is not int:
            raise ProtocolError(f"request id {request_id!r} is not an integer")
        method_name = self._names.get(name) if type(name) is bytes else None
        callable_name = method_name is not None
        if method_name is None:
            method_name, callable_name = self._method_name(name)
        answer_required = bool(answer_required)
        if cache:
            target = self.cache_target(oid)
        else:
            entry = self._exports.get(oid) if type(oid) in (int, bytes) else None
            target = None if entry is None else entry[0]
        if target is None:
            reader.skip()
            reader.skip()
            what = "Cache" if cache else "Object"  # Twisted's text: "Invalid Object ID"
            self._reply_error(request_id, answer_required, Error(f"Invalid {what} ID"))
            self._violation(f"message to unknown {what.lower()} id {oid!r}", events)
            return
        try:
            args = reader.jelly()
            kwargs = reader.jelly()
        except InsecureJelly as exc:
            self._rest_of(reader)
            self._commit(reader)
            self._reply_error(request_id, answer_required, exc)
            self._violation(f"refused type in arguments: {exc}", events)
            return
        if reader.imported:
            self._commit(reader)
        # The call is delivered, or answered at once with why not.
        if type(args) is not tuple and type(args) is not list or type(kwargs) is not dict:
            self._reply_error(request_id, answer_required,
                              TypeError("arguments must be a tuple and a dictionary"))
            return
        if kwargs:
            try:
                kwargs = {(k.decode("utf-8") if type(k) is bytes else k): v
                          for k, v in kwargs.items()}
            except UnicodeDecodeError:
                kwargs = None
            if kwargs is None or not all(type(k) is str for k in kwargs):
                self._reply_error(request_id, answer_required,
                                  TypeError("keyword argument names must be text"))
                return
        if not callable_name:  # dots, dunders, odd characters
            self._reply_error(request_id, answer_required, NoSuchMethod(
                f"refused method name {method_name!r}: only identifiers without '__' "
                f"are callable"))
            return
        if isinstance(target, Referenceable):
            method, perspective = target.remote_method(method_name), target.pb_perspective
        elif isinstance(target, RemoteCache):  # a cachemessage: the owner's update
            method, perspective = target.observe_method(method_name), None
        else:
            method = perspective = None
        if method is None:
            prefix = (target.observe_prefix if isinstance(target, RemoteCache)
                      else getattr(target, "remote_prefix", "remote_"))
            self._reply_error(request_id, answer_required,
                              NoSuchMethod(f"No such method: {prefix}{method_name}"))
            return
        limit = self._max_incoming
        if limit is not None and self._incoming >= limit:
            self._refuse_call(request_id, answer_required, limit)
            return
        if answer_required:
            self._incoming += 1
        events.append(CallReceived(request_id, method,
                                   args if type(args) is tuple else tuple(args), kwargs,
                                   answer_required, perspective))
