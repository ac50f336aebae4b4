"""Cached copies kept up to date: Cacheable, RemoteCache and observers (layer L0.6).

Theory of operation
-------------------
A :class:`Cacheable` is copied to a connection once. The first time it is
sent, the owner's broker gives it a cache id and asks it for its state
*and* hands it an observer (:meth:`Cacheable.getStateToCacheAndObserveFor`);
the peer builds the :class:`RemoteCache` subclass registered for the tag
(with :func:`~syncpb.setUnjellyableForClass`, like a copy) and keeps it
under that id. Later sends of the same object are just ``['cached', id]``.

The owner keeps the holder up to date through the observer:
``observer.callRemote("name", ...)`` becomes a ``cachemessage`` that runs
``observe_name(...)`` on the holder's RemoteCache. :class:`ObserverList`
keeps a Cacheable's observers and notifies them all.

Lifetime, exactly as Twisted does it: every occurrence the holder receives
is a separate Python object (they share one ``__dict__``, so they compare
equal and see the same updates). As each is garbage-collected the holder
sends one ``decache``; when the owner's count for the id drops to zero it
runs :meth:`Cacheable.stoppedObserving` and answers ``uncache``, after
which the holder forgets the id. A lost connection stops every observer.

The wire work lives in the broker; this module holds the classes users
subclass and the helper they use.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable, Iterator, List, Optional

from .copyable import Copyable, RemoteCopy
from .errors import ConnectionLost, DeadReferenceError

__all__ = ["Cacheable", "RemoteCache", "ObserverList"]

#: What a peer may run: functions and methods (bound, built-in, or a view's
#: ``functools.partial``). A class, or an object with ``__call__``, stored
#: under a ``remote_`` name is not a method and is refused.
METHOD_TYPES = (types.MethodType, types.FunctionType, types.BuiltinMethodType,
                functools.partial)


class Cacheable(Copyable):
    """An object copied once per connection and then kept up to date."""

    def getStateToCacheAndObserveFor(self, perspective: Any,  # noqa: N802 - Twisted's name
                                     observer: Any) -> Any:
        """Return the state for ``perspective`` and keep ``observer`` to send
        it updates. By default: :meth:`getStateToCopyFor`, observer unused."""
        return self.getStateToCopyFor(perspective)

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:  # noqa: N802
        """``observer`` (the one given to
        :meth:`getStateToCacheAndObserveFor`) no longer wants updates: the
        holder dropped its copy or the connection ended."""


class RemoteCache(RemoteCopy):
    """The holder's copy of a :class:`Cacheable`; ``observe_`` methods
    receive the owner's updates, in the order they were sent.

    Built by calling the class with no arguments (as Twisted does), then
    given the state with :meth:`setCopyableState`. Each occurrence received
    is its own object sharing one ``__dict__``; they compare equal.
    """

    pb_form = "cache"
    #: Prefix of the methods the owner's observer may call.
    observe_prefix = "observe_"

    def observe_method(self, name: str) -> Optional[Callable[..., Any]]:
        """The bound method an update named ``name`` runs, or None."""
        method = getattr(self, self.observe_prefix + name, None)
        return method if isinstance(method, METHOD_TYPES) else None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RemoteCache):
            return self.__dict__ is other.__dict__
        return NotImplemented

    def __hash__(self) -> int:
        return id(self.__dict__)


class ObserverList:
    """The observers of a Cacheable, notified together.

    ``notify`` skips (and forgets) observers whose connection has ended, so
    one departed holder never stops the others' updates. Safe to use from
    any thread: it works on a snapshot.
    """

    def __init__(self) -> None:
        self._observers: List[Any] = []

    def add(self, observer: Any) -> None:
        """Start notifying ``observer``."""
        if observer not in self._observers:
            self._observers = self._observers + [observer]

    def discard(self, observer: Any) -> None:
        """Stop notifying ``observer`` (no error if it is not here)."""
        self._observers = [o for o in self._observers if o != observer]

    def notify(self, name: str, *args: Any, **kwargs: Any) -> List[Any]:
        """Call ``observe_<name>(*args, **kwargs)`` on every holder; return
        the Deferreds of the updates that were sent."""
        sent = []
        for observer in self._observers:
            try:
                sent.append(observer.callRemote(name, *args, **kwargs))
            except (DeadReferenceError, ConnectionLost):
                self.discard(observer)
        return sent

    def __len__(self) -> int:
        return len(self._observers)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._observers)

    def __contains__(self, observer: Any) -> bool:
        return observer in self._observers
