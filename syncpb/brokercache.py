"""The broker's side of PB's cache protocol (layer L1.9, sans-IO).

:class:`CacheProtocol` is mixed into :class:`~syncpb.broker.Broker`; it
holds both ends of Cacheable / RemoteCache (see :mod:`syncpb.cache` for
the model) and the wire forms of the spec's section 3.10:

Owner (the side whose Cacheable is sent)
    ``_caches`` maps a cache id to ``[cacheable, count, observer,
    perspective, id]`` and ``_cache_ids`` maps ``id(cacheable)`` to its
    cache id. The first occurrence in a message writes
    ``[tag, id, state]`` (a later one in the same message is a
    ``dereference``); an object already cached writes ``['cached', id]``.
    Counts are committed with the message's exports (one per occurrence)
    and rolled back if the message cannot be encoded. ``decache`` lowers
    the count; at zero the entry goes, ``stoppedObserving`` is queued as a
    call that needs no answer, and ``['uncache', id]`` is sent.

Holder (the side that receives copies)
    ``_cache_imports`` maps a cache id to a :class:`CacheRecord` that keeps
    the first object built (the *root*) until ``uncache``. Every occurrence
    received is a new object sharing the root's ``__dict__``; a weak
    reference to each sends one ``decache`` when it is collected, through
    the same release queue as proxies. ``cachemessage`` runs the root's
    ``observe_`` method. ``['lcache', id]`` from the holder names the
    owner's original object.

Unknown ids in ``cached``, ``lcache``, ``decache``, ``uncache`` or a
duplicate full form are protocol errors: the connection is dropped, as
Twisted does; ``cachemessage`` to an unknown id is answered with an error.
"""

from __future__ import annotations

import functools
import logging
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from .cache import Cacheable, RemoteCache
from .errors import DeadReferenceError, Error, ProtocolError
from .events import CallReceived
from .jelly import JellyError

__all__ = ["CacheProtocol", "CacheRecord", "CacheObserver"]

log = logging.getLogger("syncpb")


class CacheRecord:
    """A cache the peer gave us: its id and the object kept until ``uncache``."""

    __slots__ = ("cid", "root", "refs")

    def __init__(self, cid: int, root: RemoteCache) -> None:
        self.cid = cid
        self.root = root
        # Weak references to the objects handed out, by id: the objects compare
        # equal (one shared __dict__), so a set of their references would merge them.
        self.refs: Dict[int, Any] = {}


class CacheObserver:
    """The sans-IO observer: ``callRemote`` queues a ``cachemessage`` and
    returns its request id (sessions hand out observers that return
    Deferreds instead)."""

    def __init__(self, broker: "CacheProtocol", cacheable: Cacheable, perspective: Any) -> None:
        self.broker = broker
        self.cacheable = cacheable
        self.perspective = perspective

    def callRemote(self, _name: str, *args: Any, **kwargs: Any) -> int:  # noqa: N802
        cid = self.broker.cache_id_of(self.cacheable)
        if cid is None:
            raise DeadReferenceError("the peer no longer holds this cached object")
        return self.broker.call(cid, _name, args, kwargs, cache=True,
                                perspective=self.perspective)


ObserverFactory = Callable[[Any, Cacheable, Any], Any]


#: The broker's slots that hold :class:`CacheProtocol`'s attributes.
CACHE_SLOTS = ("_caches", "_cache_ids", "_cache_imports", "_cache_dicts", "observer_factory",
               "on_release", "_next_oid")


class CacheProtocol:
    """Cache tables and handlers; mixed into the broker."""

    if not TYPE_CHECKING:
        # No storage of its own: its attributes are slots of the broker
        # (CACHE_SLOTS), as two bases with slots cannot both have some.
        # (mypy, told of no slots, checks the attributes as declared.)
        # _next_oid is the broker's counter, shared by its exports and cache ids.
        __slots__ = ()

    _perspective: Any
    _pending_exports: List[Any]
    _next_oid: int
    limits: Any
    call: Callable[..., int]  # Broker.call
    released: Any

    def _init_caches(self) -> None:
        self._caches: Dict[int, List[Any]] = {}
        self._cache_ids: Dict[int, int] = {}
        self._cache_imports: Dict[int, CacheRecord] = {}
        self._cache_dicts: Dict[int, int] = {}  # id(root.__dict__) -> cache id
        #: Builds the observer given to getStateToCacheAndObserveFor.
        self.observer_factory: ObserverFactory = CacheObserver
        #: Called (from any thread) when a received cache object is collected.
        self.on_release: Callable[[Any], None] = self.released.append

    # -- status

    @property
    def cache_count(self) -> int:
        """Our Cacheables the peer holds copies of."""
        return len(self._caches)

    @property
    def cache_import_count(self) -> int:
        """The peer's Cacheables we hold copies of (until ``uncache``)."""
        return len(self._cache_imports)

    def cache_id_of(self, cacheable: Cacheable) -> Optional[int]:
        """The id ``cacheable`` is cached under on this connection, or None."""
        return self._cache_ids.get(id(cacheable))

    # -- owner: writing

    def _write_cacheable(self, obj: Cacheable, writer: Any, out: List[bytes]) -> None:
        if writer.shared(obj):  # already written in this message: a dereference
            writer.begin_shared(obj, out)
            return
        cid = self._cache_ids.get(id(obj))
        if cid is not None:
            entry = self._caches[cid]
            out.append(b"\x02\x80" + writer.word(b"cached") + writer.int_token(cid))
            self._pending_exports.append(entry)
            return
        if len(self._caches) > self.limits.max_references:
            raise Error("Maximum PB cache count exceeded.")
        self._next_oid += 1
        cid = self._next_oid
        perspective = self._perspective
        observer = self.observer_factory(self, obj, perspective)
        entry = [obj, 0, observer, perspective, cid]
        self._caches[cid] = entry
        self._cache_ids[id(obj)] = cid
        self._pending_exports.append(entry)
        tag = obj.getTypeToCopyFor(perspective)
        state = obj.getStateToCacheAndObserveFor(perspective, observer)
        writer.cache_form(tag.encode("utf-8") if isinstance(tag, str) else tag, cid, state,
                          obj, out)

    def _rollback_cache(self, entry: List[Any]) -> None:
        """A message with a new cache entry was not sent: forget the entry."""
        if entry[1] == 0 and self._caches.get(entry[4]) is entry:
            del self._caches[entry[4]]
            self._cache_ids.pop(id(entry[0]), None)
            _stop_observing(entry)

    # -- owner: reading

    def unjelly_lcache(self, cid: Any) -> Any:
        """Our own Cacheable coming back (``['lcache', id]``)."""
        entry = self._caches.get(cid) if type(cid) is int else None
        if entry is None:
            raise JellyError(f"lcache of unknown cache id {cid!r}")
        return entry[0]

    def _on_decache(self, reader: Any, count: int, events: List[Any]) -> None:
        self._fields(reader, count, 1, "decache")  # type: ignore[attr-defined]
        cid = reader.raw()
        entry = self._caches.get(cid) if type(cid) is int else None
        if entry is None:
            raise ProtocolError(f"decache of unknown cache id {cid!r}")
        entry[1] -= 1
        if entry[1] <= 0:
            del self._caches[cid]
            self._cache_ids.pop(id(entry[0]), None)
            events.append(_stopped_call(entry))
            self._emit([b"uncache", cid])  # type: ignore[attr-defined]

    def _take_observers(self) -> List[Callable[[], None]]:
        """Forget every cache the peer holds; return their ``stoppedObserving``
        calls (the connection has ended)."""
        calls: List[Callable[[], None]] = [
            functools.partial(_stop_observing, entry) for entry in self._caches.values()]
        self._caches.clear()
        self._cache_ids.clear()
        return calls

    # -- holder: reading

    def unjelly_cache(self, cls: type, cid: Any) -> RemoteCache:
        """A new cache ``[tag, id, state]``: build it, return its first object
        (the reader registers it, fills it, then calls :meth:`cache_filled`)."""
        if type(cid) is not int:
            raise JellyError(f"cache id {cid!r} is not an integer")
        if cid in self._cache_imports:
            raise JellyError(f"cache id {cid} sent in full twice")
        try:
            root = cls()  # Twisted calls the class with no arguments
        except Exception as exc:
            raise JellyError(f"{cls.__qualname__}() failed: {type(exc).__name__}: {exc}") from exc
        record = CacheRecord(cid, root)
        self._cache_imports[cid] = record
        return self._hand_out(record)

    def cache_filled(self, cid: int, first: RemoteCache) -> None:
        """The state of new cache ``cid`` is in ``first``: the root shares it."""
        record = self._cache_imports.get(cid)
        if record is not None:
            record.root.__dict__ = first.__dict__
            self._cache_dicts[id(first.__dict__)] = cid

    def unjelly_cached(self, cid: Any) -> RemoteCache:
        """A later occurrence ``['cached', id]``: a new object sharing the state."""
        record = self._cache_imports.get(cid) if type(cid) is int else None
        if record is None:
            raise JellyError(f"cached reference to unknown cache id {cid!r}")
        return self._hand_out(record)

    def _hand_out(self, record: CacheRecord) -> RemoteCache:
        root = record.root
        obj = type(root).__new__(type(root))
        obj.__dict__ = root.__dict__
        release = self.on_release

        def collected(ref: Any, record: CacheRecord = record) -> None:
            record.refs.pop(id(ref), None)
            release(record)

        ref = weakref.ref(obj, collected)
        record.refs[id(ref)] = ref
        return obj

    def _on_uncache(self, reader: Any, count: int, events: List[Any]) -> None:
        self._fields(reader, count, 1, "uncache")  # type: ignore[attr-defined]
        cid = reader.raw()
        record = self._cache_imports.pop(cid, None) if type(cid) is int else None
        if record is None:
            raise ProtocolError(f"uncache of unknown cache id {cid!r}")
        self._cache_dicts.pop(id(record.root.__dict__), None)

    def cache_target(self, cid: Any) -> Optional[RemoteCache]:
        """The object a ``cachemessage`` to ``cid`` runs on, or None."""
        record = self._cache_imports.get(cid) if type(cid) is int else None
        return None if record is None else record.root

    # -- holder: writing

    def _write_remote_cache(self, obj: RemoteCache, writer: Any, out: List[bytes]) -> None:
        cid = self._cache_dicts.get(id(obj.__dict__))
        if cid is None:
            raise TypeError("cannot send a cached copy that belongs to another connection")
        out.append(b"\x02\x80" + writer.word(b"lcache") + writer.int_token(cid))

    def _decache(self, record: CacheRecord) -> None:
        """One object of a received cache was collected: tell the owner."""
        if self._cache_imports.get(record.cid) is record:
            self._emit([b"decache", record.cid])  # type: ignore[attr-defined]


def _stopped_call(entry: List[Any]) -> Any:
    """``stoppedObserving(perspective, observer)`` as a call needing no answer."""
    return CallReceived(None, entry[0].stoppedObserving, (entry[3], entry[2]), {}, False)


def _stop_observing(entry: List[Any]) -> None:
    """Run ``stoppedObserving`` now; an error in it is logged, not raised."""
    try:
        entry[0].stoppedObserving(entry[3], entry[2])
    except Exception:
        log.exception("error in stoppedObserving of %r", entry[0])
