"""The PB broker: one connection's protocol state, sans-IO (layer L2).

Theory of operation
-------------------
A :class:`Broker` is fed received bytes with :meth:`Broker.receive_data` and
returns *events*; the operations :meth:`call`, :meth:`answer`, :meth:`fail`
produce bytes that :meth:`data_to_send` hands out. It never touches a
socket, a thread or a greenlet, so a pair of brokers can be wired together
in memory and every exchange tested with plain bytes.

Core (:mod:`syncpb.brokercore`, the base class): the state every call
touches and the paths every small call takes (encoding a call or a small
answer, decoding a whole message that is an answer or a call) live in
:class:`~syncpb.brokercore.BrokerCore`, compiled from
``syncpb/_cbrokercore.pyx`` when built; everything else is here.

Stream handling (:mod:`syncpb.brokerstream`, mixed in): received bytes are
cut into messages, decoded straight from the chunk when a message came
whole, framed and joined once when it came in pieces, or read by the
session straight into one buffer. Decoding has no side effects until a
message is complete: imported references are counted only when the
message commits.

Tables. ``_exports`` maps our object ids (and ``b'root'``) to the object and
the number of ``['remote', id]`` occurrences sent; the peer's ``decref``
lowers it. ``_imports`` maps the peer's ids to an :class:`ImportRecord`
shared with the proxy; when a proxy dies its record is queued on
:attr:`released` (safe from any thread) and turned into that many
``decref`` messages at the next :meth:`data_to_send`.

Failures. A protocol violation produces a final :class:`ProtocolViolation`
event; the owner must close the connection. Calls still waiting for an
answer are the owner's to fail (it holds their Deferreds).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NoReturn, Optional, Tuple

from . import banana, brokercore, speedups
from .brokercache import CACHE_SLOTS, CacheProtocol, CacheRecord
from .brokercore import _AWAIT_CHOICE, _AWAIT_OFFER, _DEAD, _READY
from .brokerstream import StreamReceiver
from .cache import Cacheable, RemoteCache
from .copyable import Copyable
from .events import AnswerReceived, CallReceived, ErrorReceived, ProtocolViolation, Ready
from .errors import BananaError, Error, InsecureJelly, ProtocolError
from .flavors import Referenceable, Root, Viewable, ViewPoint
from .jelly import JellyError, Reader, SecurityOptions, Writer
from .wirefailure import FAILURE_TAG, exception_from_state, failure_state

__all__ = [
    "Limits",
    "Broker",
    "ImportRecord",
    "Ready",
    "CallReceived",
    "AnswerReceived",
    "ErrorReceived",
    "ProtocolViolation",
    "PROTOCOL_VERSION",
]

log = logging.getLogger("syncpb")

PROTOCOL_VERSION = 6
#: Shortest prefix limit accepted: request ids of a long-lived connection need 3 bytes.
MIN_PREFIX_LIMIT = 4


@dataclass(frozen=True)
class Limits:
    """Per-connection limits: size_limit, prefix_limit and max_references
    default to Twisted's values, the others (which Twisted lacks) to syncpb's.

    Attributes:
        size_limit: longest string / list accepted or sent (Banana SIZE_LIMIT).
        prefix_limit: longest token prefix in bytes (2**448 magnitude).
        max_references: Twisted's MAX_BROKER_REFS: a new object can be
            exported while the export table holds at most this many
            entries (a server's root counts as one, as in Twisted).
        max_depth: deepest nesting of containers decoded. Twisted has no
            explicit limit and fails at Python's recursion limit (roughly
            250 levels for its decoder); 200 stays safely inside it.
        max_incoming_calls: calls from the peer running at once (awaiting
            their answers). A call beyond it is answered at once with an
            error (never queued); answers and callbacks are never held
            back. None means unlimited, as in Twisted.
        close_on_violation: also close the connection after answering a
            message to an unknown object or a refused type (Twisted only
            answers with an error).
        max_unsent_bytes: bytes a server connection may have waiting to
            be written because its peer does not read them; beyond it the
            connection is closed (logged), instead of the server's memory
            growing. None: no limit. (A client's writes wait for the socket
            instead: the calling thread blocks.)
    """

    size_limit: int = banana.SIZE_LIMIT
    prefix_limit: int = banana.PREFIX_LIMIT
    max_references: int = 1024
    max_depth: int = 200
    max_incoming_calls: Optional[int] = 1000
    close_on_violation: bool = True
    max_unsent_bytes: Optional[int] = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.prefix_limit < MIN_PREFIX_LIMIT:
            raise ValueError(f"prefix_limit must be at least {MIN_PREFIX_LIMIT} bytes")
        if self.size_limit < 1 or self.max_depth < 1 or self.max_references < 1:
            raise ValueError("size_limit, max_depth and max_references must be positive")


if TYPE_CHECKING:
    from .brokercore import BrokerCore
else:
    #: The broker's state and hot paths: compiled (syncpb/_cbrokercore.pyx)
    #: when built, else the reference, :class:`syncpb.brokercore.BrokerCore`.
    _ccore = speedups.load("_cbrokercore")
    BrokerCore = brokercore.BrokerCore if _ccore is None else _ccore.BrokerCore


class ImportRecord:
    """Occurrences of one peer object held by one live proxy."""

    __slots__ = ("oid", "count", "proxy", "__weakref__")

    def __init__(self, oid: int) -> None:
        self.oid = oid
        self.count = 0
        self.proxy: Callable[[], Any] = lambda: None


Event = Any
ProxyFactory = Callable[["Broker", ImportRecord], Any]


class Broker(BrokerCore, StreamReceiver, CacheProtocol):
    """PB protocol state of one connection.

    Args:
        root: the object published as ``b'root'`` (server side), or None.
        is_client: True for the side that connected (it answers the offer).
        proxy_factory: builds the proxy object for an imported reference.
        security: the allow-list for decoding; a fresh default if None.
        limits: per-connection limits.
        unsafe_tracebacks: send full tracebacks in failures (opt-in).
    """

    # Slots, not an instance dict: the hot paths read many attributes, and
    # CPython's fast instance-attribute lookups stop at about 30 dict entries.
    # The hottest are the core's (CORE_SLOTS: C fields when compiled).
    __slots__ = ("limits", "is_client", "unsafe_tracebacks", "proxy_factory", "_vocab",
                 "_framer", "assemble",  # StreamReceiver
                 "_export_ids", "_viewpoints", "_imports", "_refusing",
                 "_told_limit", "peer", "peer_info", "on_abort", "__weakref__") + CACHE_SLOTS

    def __init__(self, root: Any = None, is_client: bool = False,
                 proxy_factory: Optional[ProxyFactory] = None,
                 security: Optional[SecurityOptions] = None,
                 limits: Limits = Limits(), unsafe_tracebacks: bool = False,
                 peer_info: Any = None) -> None:
        self.limits = limits
        self.is_client = is_client
        self.unsafe_tracebacks = unsafe_tracebacks
        self.security = security if security is not None else SecurityOptions()
        self.security.register(FAILURE_TAG, exception_from_state)
        self.proxy_factory = proxy_factory or (lambda broker, record: record)
        #: Who the peer is, for log lines (the session sets it; "" when unknown).
        self.peer = ""
        #: What the transport knows of the peer (a :class:`syncpb.transport.PeerInfo`:
        #: its address, unix credentials, TLS certificate), given by whoever
        #: made the connection; a root's ``rootObject(broker)`` may read it.
        self.peer_info: Any = peer_info
        #: Called by :meth:`abort` (the session closes the connection).
        self.on_abort: Optional[Callable[[str], None]] = None
        self.released: List[Any] = []  # ImportRecords and CacheRecords (append only)
        self._state = _AWAIT_OFFER if is_client else _AWAIT_CHOICE
        self._vocab = False
        self._out: List[bytes] = []
        self._writer = Writer(self, False, limits.size_limit, limits.prefix_limit)
        self._names: Dict[bytes, str] = {}  # method names checked callable, decoded
        self._long_strings: Optional[Dict[int, bytes]] = None
        self._init_stream(limits)
        self._reader: Optional[Reader] = None  # made once the dialect is settled
        self._next_request = 0
        self._next_oid = 0
        self._exports: Dict[Any, List[Any]] = {}
        self._export_ids: Dict[int, Any] = {}
        self._viewpoints: Dict[Tuple[int, int], ViewPoint] = {}  # exported views, by key
        self._pending_exports: List[Any] = []
        self._perspective: Any = None  # whom the message being encoded is for
        self._imports: Dict[int, ImportRecord] = {}
        self._waiting: set[int] = set()
        self._incoming = 0
        self._max_incoming = limits.max_incoming_calls
        self._refusing: Optional[str] = None
        self._told_limit = False
        self._init_caches()
        if root is not None:
            published = root.rootObject(self) if isinstance(root, Root) else root
            self._exports[b"root"] = [published, None]
        if not is_client:
            self._out.append(banana.offer())

    # ------------------------------------------------------------ status

    @property
    def ready(self) -> bool:
        """True once the dialect is settled."""
        return self._state == _READY

    @property
    def dialect(self) -> Optional[bytes]:
        """The chosen dialect, once settled."""
        if self._state in (_AWAIT_OFFER, _AWAIT_CHOICE):
            return None
        return b"pb" if self._vocab else b"none"

    @property
    def export_count(self) -> int:
        """Objects in the export table, the root not included."""
        return sum(1 for key in self._exports if key != b"root")

    @property
    def import_count(self) -> int:
        """Peer objects we hold proxies for."""
        return len(self._imports)

    @property
    def waiting_count(self) -> int:
        """Our calls still waiting for an answer."""
        return len(self._waiting)

    def data_to_send(self) -> bytes:
        """Return (and forget) the bytes produced so far."""
        return b"".join(self.pieces_to_send())

    # ------------------------------------------------------------ receiving

    def _handshake(self, buf: bytes, pos: int, events: List[Event]) -> int:
        reader = Reader(buf, pos, self.security, None, False, self.limits.size_limit,
                        self.limits.prefix_limit, self.limits.max_depth)
        value = reader.raw()
        if self._state == _AWAIT_CHOICE:
            if value not in banana.DIALECTS:
                raise ProtocolError(f"peer chose an unknown dialect {value!r}")
            self._settle(value)
        else:
            if not isinstance(value, list) or not value:
                raise ProtocolError(f"bad dialect offer {value!r}")
            choice = next((d for d in banana.DIALECTS if d in value), None)
            if choice is None:
                raise ProtocolError(f"no common dialect in {value!r}")
            self._out.append(banana.encode(choice, vocab=False))
            self._settle(choice)
        events.append(Ready())
        return reader.pos

    def _settle(self, dialect: bytes) -> None:
        self._vocab = dialect == b"pb"
        self._writer = Writer(self, self._vocab, self.limits.size_limit, self.limits.prefix_limit)
        self._reader = Reader(b"", 0, self.security, self, self._vocab, self.limits.size_limit,
                              self.limits.prefix_limit, self.limits.max_depth)
        self._message_head = b"\x07\x80" + self._writer.word(b"message")
        self._cachemessage_head = b"\x07\x80" + self._writer.word(b"cachemessage")
        self._answer_head = b"\x03\x80" + self._writer.word(b"answer")
        self._empty_kwargs = b"\x01\x80" + self._writer.word(b"dictionary")
        self._call_targets: Dict[Tuple[Any, str], bytes] = {}
        self._state = _READY
        self._emit([b"version", PROTOCOL_VERSION])

    def _emit(self, fields: List[Any]) -> None:
        self._out.append(banana.encode(fields, self._vocab, self.limits.size_limit,
                                       self.limits.prefix_limit))

    def _die(self, exc: BaseException, events: List[Event]) -> None:
        self._state = _DEAD
        self._forget_stream()
        events.append(ProtocolViolation(exc))

    def _fields(self, reader: Reader, count: int, expected: int, command: str) -> None:
        if count != expected:
            raise ProtocolError(f"{command} message with {count} fields, expected {expected}")

    # -- commands

    def _on_version(self, reader: Reader, count: int, events: List[Event]) -> None:
        self._fields(reader, count, 1, "version")
        version = reader.raw()
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"peer speaks PB version {version!r}, not {PROTOCOL_VERSION}")

    def _on_cachemessage(self, reader: Reader, count: int, events: List[Event]) -> None:
        self._on_message(reader, count, events, cache=True)

    def _method_name(self, name: Any) -> Tuple[str, bool]:
        """A method name from the wire, decoded, and whether it may be
        called (an identifier without ``__``); remembered when it may."""
        if type(name) is not bytes:
            raise ProtocolError(f"method name {name!r} is not a byte string")
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"method name {name!r} is not UTF-8") from None
        if not text.isidentifier() or "__" in text:
            return text, False
        if len(self._names) < 256:
            self._names[name] = text
        return text, True

    def _rest_of(self, reader: Reader) -> None:
        """Position ``reader`` after the message that failed to decode."""
        reader.pos = reader.start
        reader.skip()

    def _refuse_call(self, request_id: Any, answer_required: bool, limit: int) -> None:
        """Answer a call beyond the limit (or any call, while refusing) at once."""
        if self._refusing is not None:
            self._reply_error(request_id, answer_required, Error(self._refusing))
            return
        if not self._told_limit:
            self._told_limit = True
            log.warning("PB peer %s has %d calls in progress, Limits.max_incoming_calls: "
                        "refusing its further calls until some finish (logged once per "
                        "connection)", self.peer or "?", limit)
        self._reply_error(request_id, answer_required, Error(
            f"too many calls in progress on this connection (the server allows {limit}, "
            f"Limits.max_incoming_calls); this call was not run, retry when others finish"))

    @property
    def calls_in_progress(self) -> int:
        """Calls from the peer still awaiting their answers."""
        return self._incoming

    def refuse_calls(self, reason: str) -> None:
        """Answer every further call from the peer with an error saying
        ``reason`` (e.g. while the server stops); answers still go out."""
        self._refusing = reason
        self._max_incoming = 0

    @property
    def root_object(self) -> Any:
        """The object published as ``b'root'`` on this connection (None on a client)."""
        entry = self._exports.get(b"root")
        return None if entry is None else entry[0]

    def _violation(self, reason: str, events: List[Event]) -> None:
        if self.limits.close_on_violation:
            self._die(ProtocolError(reason), events)
        else:
            log.warning("PB peer error (connection kept): %s", reason)

    def _on_error(self, reader: Reader, count: int, events: List[Event]) -> None:
        self._fields(reader, count, 2, "error")
        request_id = self._check_waiting(reader.raw())
        value = self._payload(reader, request_id, events)
        self._waiting.discard(request_id)
        if not isinstance(value, BaseException):
            value = exception_from_state({"type": b"builtins.Exception", "value": repr(value)})
        events.append(ErrorReceived(request_id, value))

    def _check_waiting(self, request_id: Any) -> Any:
        if type(request_id) is not int or request_id not in self._waiting:
            raise ProtocolError(f"answer for unknown request id {request_id!r}")
        return request_id

    def _payload(self, reader: Reader, request_id: int, events: List[Event]) -> Any:
        try:
            value = reader.jelly()
        except (InsecureJelly, JellyError) as exc:
            self._undecodable(request_id, exc, events)
        self._commit(reader)
        return value

    def _undecodable(self, request_id: int, exc: Exception, events: List[Event]) -> NoReturn:
        """Fail the call whose answer could not be decoded, then the connection."""
        self._waiting.discard(request_id)  # settled here, not again at connection loss
        events.append(ErrorReceived(request_id, exc))
        raise ProtocolError(f"undecodable answer to request {request_id}: {exc}") from exc

    def _on_decref(self, reader: Reader, count: int, events: List[Event]) -> None:
        self._fields(reader, count, 1, "decref")
        oid = reader.raw()
        entry = self._exports.get(oid) if type(oid) is int else None
        if entry is None:
            raise ProtocolError(f"decref of unknown object id {oid!r}")
        entry[1] -= 1
        if entry[1] <= 0:
            self._forget_export(oid)

    def _on_did_not_understand(self, reader: Reader, count: int, events: List[Event]) -> None:
        log.warning("PB peer did not understand: %r", [reader.raw() for _ in range(count)])

    _commands: Dict[bytes, Callable[..., None]] = {
        b"version": _on_version,
        b"message": BrokerCore._on_message,
        b"answer": BrokerCore._on_answer,
        b"error": _on_error,
        b"decref": _on_decref,
        b"cachemessage": _on_cachemessage,
        b"decache": CacheProtocol._on_decache,
        b"uncache": CacheProtocol._on_uncache,
        b"didNotUnderstand": _on_did_not_understand,
    }

    # ------------------------------------------------------------ jelly context

    def jelly_object(self, obj: Any, writer: Writer, out: List[bytes]) -> bool:
        """Encode Referenceables and proxies (the codec's hook)."""
        if type(obj) is _FailureCopy:
            writer.copy_form(FAILURE_TAG, obj.state, obj, out)
            return True
        record = getattr(obj, "_pb_record", None)
        if isinstance(record, ImportRecord):
            if self._imports.get(record.oid) is not record:
                raise TypeError("cannot send a reference that belongs to another connection")
            out.append(b"\x02\x80" + writer.word(b"local") + writer.int_token(record.oid))
            return True
        if isinstance(obj, Referenceable):
            if isinstance(obj, Viewable):
                obj = self._view_of(obj)
            out.append(b"\x02\x80" + writer.word(b"remote") + writer.int_token(self._export(obj)))
            return True
        if isinstance(obj, Cacheable):
            self._write_cacheable(obj, writer, out)
            return True
        if isinstance(obj, RemoteCache):
            self._write_remote_cache(obj, writer, out)
            return True
        if isinstance(obj, Copyable):
            perspective = self._perspective
            tag = obj.getTypeToCopyFor(perspective)
            writer.copy_form(tag.encode("utf-8") if isinstance(tag, str) else tag,
                             obj.getStateToCopyFor(perspective), obj, out)
            return True
        return False

    def _view_of(self, viewable: Viewable) -> ViewPoint:
        """The view of ``viewable`` for the perspective being encoded for."""
        view = ViewPoint(self._perspective, viewable)
        return self._viewpoints.get(view.key, view)  # an exported view keeps its id

    def _forget_export(self, oid: Any) -> None:
        entry = self._exports.pop(oid)
        self._export_ids.pop(id(entry[0]), None)
        if type(entry[0]) is ViewPoint:
            self._viewpoints.pop(entry[0].key, None)
        unexported = getattr(entry[0], "_pb_unexported", None)
        if unexported is not None:  # e.g. a login's avatar: its logout runs now
            unexported()

    def abort(self, reason: str) -> None:
        """Application code asks to drop this connection (e.g. a client that
        keeps guessing passwords); the session closes it."""
        log.warning("closing PB connection %s: %s", self.peer or "?", reason)
        if self.on_abort is not None:
            self.on_abort(reason)

    def take_disconnect_work(self) -> List[Callable[[], None]]:
        """The connection has ended: what the application must still be
        told, for the session to run: ``stoppedObserving`` for every cache
        the peer held and the ``_pb_unexported`` hook (a login's logout) of
        every exported object. Each logs its own errors."""
        hooks = [getattr(entry[0], "_pb_unexported", None) for entry in self._exports.values()]
        return self._take_observers() + [hook for hook in hooks if hook is not None]

    def _export(self, obj: Any) -> Any:
        oid = self._export_ids.get(id(obj))
        if oid is None:
            if len(self._exports) > self.limits.max_references:
                raise Error("Maximum PB reference count exceeded.")
            self._next_oid += 1
            oid = self._next_oid
            self._exports[oid] = [obj, 0]
            self._export_ids[id(obj)] = oid
            if type(obj) is ViewPoint:
                self._viewpoints[obj.key] = obj
        self._pending_exports.append(oid)
        return oid

    def unjelly_remote(self, oid: int, reader: Reader) -> Any:
        """Return the proxy for the peer's object ``oid`` (counted on commit)."""
        record = self._imports.get(oid)
        proxy = None if record is None else record.proxy()
        if proxy is None:
            record = ImportRecord(oid)
            self._imports[oid] = record
            proxy = self.proxy_factory(self, record)
            record.proxy = weakref.ref(proxy)
        reader.imported.append(record)
        return proxy

    def unjelly_local(self, oid: Any) -> Any:
        """Return our own object coming back, or None for an unknown id."""
        entry = self._exports.get(oid) if type(oid) in (int, bytes) else None
        return None if entry is None else entry[0]

    def _commit(self, reader: Reader) -> None:
        for record in reader.imported:
            record.count += 1
        reader.imported = []

    def _send_decrefs(self) -> None:
        released = self.released
        count = len(released)  # any thread may append meanwhile: take a prefix
        batch = released[:count]
        del released[:count]
        for record in batch:
            if type(record) is CacheRecord:
                self._decache(record)
                continue
            oid = record.oid
            if self._imports.get(oid) is record:
                del self._imports[oid]
            if self._state == _READY:
                for _ in range(record.count):
                    self._emit([b"decref", oid])
            record.count = 0

    # ------------------------------------------------------------ operations

    def _encode_parts(self, values: Tuple[Any, ...]) -> List[bytes]:
        writer = self._writer
        out: List[bytes] = []
        self._pending_exports = []
        writer.wrote_large = False
        try:
            for value in values:
                writer.write(value, out)
        except BaseException:
            self._rollback_exports()
            raise
        if self._pending_exports:
            self._commit_exports()
        return out

    def _commit_exports(self) -> None:
        """The message was encoded: count the references and caches it sent."""
        for item in self._pending_exports:
            if type(item) is list:  # a cache entry
                item[1] += 1
            else:
                self._exports[item][1] += 1
        self._pending_exports = []

    def _rollback_exports(self) -> None:
        pending, self._pending_exports = self._pending_exports, []
        for item in pending:
            if type(item) is list:
                self._rollback_cache(item)
                continue
            entry = self._exports.get(item)
            if entry is not None and entry[1] == 0:
                self._forget_export(item)

    def _answer_slow(self, request_id: Any, value: Any, perspective: Any) -> None:
        """:meth:`answer` past its fast path: a value to encode."""
        self._perspective = perspective
        try:
            body = self._encode_parts((value,))
        except (BananaError, TypeError, Error) as exc:
            log.error("answer to request %r could not be sent: %s", request_id, exc)
            self._send_error(request_id, type(exc)(f"result could not be sent: {exc}"))
            return
        head = self._answer_head + self._writer.int_token(request_id)
        if len(body) == 1 and not self._writer.wrote_large:  # small: one piece, one send
            self._out.append(head + body[0])
        else:
            self._out.append(head)
            self._out.extend(body)

    def fail(self, request_id: Any, exc: BaseException, perspective: Any = None) -> None:
        """Queue the failure of the peer's call ``request_id``."""
        self._incoming = max(0, self._incoming - 1)
        if self._state == _READY:
            self._perspective = perspective
            self._send_error(request_id, exc)

    def _reply_error(self, request_id: Any, answer_required: bool, exc: BaseException) -> None:
        if answer_required:
            self._send_error(request_id, exc)

    def _send_error(self, request_id: Any, exc: BaseException) -> None:
        body: Optional[List[bytes]] = None
        if isinstance(exc, Copyable):  # a Copyable exception travels as itself, as in Twisted
            try:
                body = self._encode_parts((exc,))
            except (BananaError, TypeError, Error) as err:
                log.error("copyable exception %r could not be sent (%s); sending a failure",
                          exc, err)
        if body is None:
            body = self._encode_parts((_FailureCopy(failure_state(exc, self.unsafe_tracebacks)),))
        self._out.append(b"\x03\x80" + self._writer.word(b"error")
                         + self._writer.int_token(request_id) + b"".join(body))

    def connection_lost(self) -> List[int]:
        """Forget all state; return the ids of our calls that never got an answer."""
        self._state = _DEAD
        waiting = sorted(self._waiting)
        self._waiting.clear()
        self._exports.clear()
        self._export_ids.clear()
        self._viewpoints.clear()
        self._imports.clear()
        self._caches.clear()
        self._cache_ids.clear()
        self._cache_imports.clear()
        self._cache_dicts.clear()
        del self.released[:]
        self._out = []
        self._forget_stream()
        return waiting


class _FailureCopy:
    """A CopyableFailure on its way out (encoded by :meth:`Broker.jelly_object`)."""

    __slots__ = ("state",)

    def __init__(self, state: Dict[str, Any]) -> None:
        self.state = state
