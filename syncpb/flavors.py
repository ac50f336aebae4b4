"""PB's object flavors (layer L1): what a local object is to the peer.

* :class:`Referenceable`: passed by reference; the peer receives a proxy
  and its calls run this object's ``remote_<name>`` methods.
* :class:`Root`: the Referenceable a server publishes on each connection
  (object id ``b'root'``).

Copyable, Cacheable and Viewable come with the flavors issue; they will
live here too.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

__all__ = ["Referenceable", "Root"]


class Referenceable:
    """An object the peer may call; it travels as ``['remote', id]``."""

    #: Prefix of the methods a peer may call on this object.
    remote_prefix = "remote_"

    def remote_method(self, name: str, perspective: Any = None) -> Optional[Callable[..., Any]]:
        """Return the bound method a call of ``name`` runs, or None.

        Args:
            name: the method name on the wire (without prefix).
            perspective: the avatar the call came through, if any.
        """
        method = getattr(self, self.remote_prefix + name, None)
        return method if callable(method) else None


class Root(Referenceable):
    """The object a :class:`~syncpb.Server` publishes to each connection."""

    def rootObject(self, broker: Any) -> Referenceable:  # noqa: N802 - Twisted's name
        """Return the object to publish on the connection of ``broker``.

        The default publishes ``self`` to every connection; override to give
        each connection its own root.
        """
        return self
