"""Jelly's shared definitions: errors, placeholders, the allow-list (layer L1).

See :mod:`syncpb.jelly` for how values travel; :mod:`syncpb.jellywriter`
and :mod:`syncpb.jellyreader` hold the two directions.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol

from .copyable import UnjellyableRegistry, default_registry
from .errors import ProtocolError

__all__ = ["JellyError", "Incomplete", "Unpersistable", "BASIC_TYPES", "SecurityOptions",
           "JellyContext", "with_registry"]


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
    b"persistent", b"remote", b"local", b"cached", b"lcache",
})


class SecurityOptions:
    """The allow-list deciding which Jelly forms may be decoded.

    Args:
        types: allowed list heads; defaults to :data:`BASIC_TYPES`.
        registry: the copy-tag registry; defaults to the process-wide
            :data:`~syncpb.copyable.default_registry`.

    A dotted type tag (a Copyable's class name) is accepted only when its
    registry has a local class for it (:func:`~syncpb.setUnjellyableForClass`)
    or a factory was registered here with :meth:`register` (the factory gets
    the decoded state and returns the local object). Nothing is ever
    imported or instantiated by name.
    """

    def __init__(self, types: Optional[Iterable[bytes]] = None,
                 registry: Optional[UnjellyableRegistry] = None) -> None:
        self.types = set(BASIC_TYPES if types is None else types)
        self.factories: Dict[bytes, Callable[[Any], Any]] = {}
        #: Copy tags -> local classes (:func:`~syncpb.setUnjellyableForClass`).
        self.registry = default_registry if registry is None else registry

    def allow_types(self, *heads: bytes) -> None:
        """Allow more list heads."""
        self.types.update(heads)

    def register(self, tag: bytes, factory: Callable[[Any], Any]) -> None:
        """Accept the copy form ``[tag, state]``, built by ``factory(state)``."""
        self.factories[tag] = factory

    def copy(self) -> "SecurityOptions":
        """Return an independent copy (for per-connection changes)."""
        other = SecurityOptions(self.types, self.registry)  # the registry is shared
        other.factories.update(self.factories)
        return other


def with_registry(security: Optional[SecurityOptions],
                  registry: Optional[UnjellyableRegistry]) -> Optional[SecurityOptions]:
    """``security`` (or a fresh one) using ``registry``; unchanged if ``registry`` is None."""
    if registry is None:
        return security
    security = security.copy() if security is not None else SecurityOptions()
    security.registry = registry
    return security


class JellyContext(Protocol):
    """What the broker lends the codec for PB's object forms."""

    def jelly_object(self, obj: Any, writer: Any, out: List[bytes]) -> bool:
        """Encode ``obj`` if it is a PB object; return False if unknown."""

    def unjelly_remote(self, oid: int, reader: Any) -> Any:
        """Return the proxy for the peer's object ``oid`` (``['remote', oid]``)."""

    def unjelly_local(self, oid: Any) -> Any:
        """Return our own object ``oid`` coming back (``['local', oid]``)."""

    def unjelly_cache(self, cls: type, cid: Any) -> Any:
        """Build a new cache ``[tag, id, state]`` of class ``cls``; return its
        first object (the reader fills it, then calls :meth:`cache_filled`)."""

    def cache_filled(self, cid: int, first: Any) -> None:
        """The state of new cache ``cid`` is in ``first``."""

    def unjelly_cached(self, cid: Any) -> Any:
        """Return a later occurrence of cache ``cid`` (``['cached', id]``)."""

    def unjelly_lcache(self, cid: Any) -> Any:
        """Return our own Cacheable coming back (``['lcache', id]``)."""
