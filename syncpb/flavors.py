"""PB's object flavors (layer L1): what a local object is to the peer.

* :class:`Referenceable`: passed by reference; the peer receives a proxy
  and its calls run this object's ``remote_<name>`` methods.
* :class:`Root`: the Referenceable a server publishes on each connection
  (object id ``b'root'``).
* :class:`Avatar`: a user's object behind a login; the peer's calls run its
  ``perspective_<name>`` methods, and whatever they return is sent *for*
  this avatar (it is the *perspective* of those answers).
* :class:`Viewable`: passed by reference as a per-perspective view; the
  peer's calls run ``view_<name>(perspective, ...)`` with the perspective
  the object was sent for, so each user gets their own answers.

Copyable lives in :mod:`syncpb.copyable`, Cacheable in :mod:`syncpb.cache`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Tuple

from .cache import METHOD_TYPES

__all__ = ["Referenceable", "Root", "Avatar", "Viewable", "ViewPoint"]


class Referenceable:
    """An object the peer may call; it travels as ``['remote', id]``."""

    #: Prefix of the methods a peer may call on this object.
    remote_prefix = "remote_"
    #: The perspective answers of this object's methods are sent for
    #: (``getStateToCopyFor`` and views get it); None for a plain object.
    pb_perspective: Any = None

    def remote_method(self, name: str, perspective: Any = None) -> Optional[Callable[..., Any]]:
        """Return the bound method a call of ``name`` runs, or None.

        Args:
            name: the method name on the wire (without prefix).
            perspective: the avatar the call came through, if any.
        """
        method = getattr(self, self.remote_prefix + name, None)
        return method if isinstance(method, METHOD_TYPES) else None


class Root(Referenceable):
    """The object a :class:`~syncpb.Server` publishes to each connection."""

    def rootObject(self, broker: Any) -> Referenceable:  # noqa: N802 - Twisted's name
        """Return the object to publish on the connection of ``broker``.

        The default publishes ``self`` to every connection; override to give
        each connection its own root.
        """
        return self


class Avatar(Referenceable):
    """A user's object (Twisted's ``pb.Avatar``): its ``perspective_``
    methods are remotely callable, and their results are sent for it."""

    remote_prefix = "perspective_"

    @property
    def pb_perspective(self) -> Any:
        return self


class Viewable(Referenceable):
    """An object each perspective sees through its own view.

    On the wire it is a reference, to a :class:`ViewPoint` of the
    perspective it was sent for; the peer's ``name(...)`` calls run
    ``view_name(perspective, ...)``. Sent for the same perspective again,
    it keeps the same reference.
    """

    remote_prefix = "view_"


class ViewPoint(Referenceable):
    """One perspective's view of a :class:`Viewable` (made by the broker)."""

    __slots__ = ("perspective", "viewable")
    remote_prefix = "view_"

    def __init__(self, perspective: Any, viewable: Viewable) -> None:
        self.perspective = perspective
        self.viewable = viewable

    @property
    def key(self) -> Tuple[int, int]:
        """Identity of the view: the perspective and the object."""
        return id(self.perspective), id(self.viewable)

    @property
    def pb_perspective(self) -> Any:
        return self.perspective

    def remote_method(self, name: str, perspective: Any = None) -> Optional[Callable[..., Any]]:
        method = self.viewable.remote_method(name)
        return None if method is None else functools.partial(method, self.perspective)

    def __repr__(self) -> str:
        return f"<ViewPoint of {self.viewable!r} for {self.perspective!r}>"
