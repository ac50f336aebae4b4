"""RemoteReference: the local proxy of an object exported by the peer (L3).

``ref.callRemote("name", *args, **kwargs)`` returns a Deferred; any other
attribute is a blocking method, so ``ref.calculate(1, 2)`` waits for and
returns the answer (or raises the remote exception), for at most the
connection's ``call_timeout``. A remote method whose name is also an
attribute of the proxy (``call``, ``callRemote``, ``luid``,
``notifyOnDisconnect`` ...) is reached with ``callRemote``/``call``. Two proxies are equal
when they name the same object on the same connection.

When the last Python reference to a proxy goes away, its import record is
queued on the broker and the connection sends one ``decref`` per
occurrence received, at its next write. Nothing happens inside ``__del__``
except appending to a thread-safe queue and asking the session to flush.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, Optional

from .errors import STALE_REFERENCE, DeadReferenceError

if TYPE_CHECKING:  # pragma: no cover
    from .broker import ImportRecord
    from .deferred import Deferred

__all__ = ["RemoteReference", "RemoteCacheObserver"]


class RemoteReference:
    """Proxy for an object the peer exported (``['remote', id]``).

    Args:
        session: the connection the object lives behind.
        record: the broker's import record (id and occurrence count).
        counted: False for the root, which is never released.
    """

    __slots__ = ("_pb_session", "_pb_record", "_pb_counted", "_pb_notify", "__weakref__")

    def __init__(self, session: Any, record: "ImportRecord", counted: bool = True) -> None:
        self._pb_session = session
        self._pb_record = record
        self._pb_counted = counted
        self._pb_notify: List[Callable[..., Any]] = []

    @property
    def luid(self) -> Any:
        """The peer's id for this object (``b'root'`` for the root)."""
        return self._pb_record.oid

    def callRemote(self, _name: str, *args: Any, **kwargs: Any) -> "Deferred":  # noqa: N802
        """Call ``remote_<_name>`` on the peer's object; return a Deferred.

        Raises:
            DeadReferenceError: the connection is closed (raised at once,
                as Twisted does).
        """
        session = self._pb_session
        if session.closed:
            raise DeadReferenceError(STALE_REFERENCE)
        if isinstance(_name, bytes):
            _name = _name.decode("utf-8")
        # the session (a layer above, so Any here) returns the call's Deferred
        d: Deferred = session.call_remote(self._pb_record.oid, _name, args, kwargs)
        return d

    def callRemoteNoAnswer(self, _name: str, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        """Call without asking for an answer (``answerRequired`` 0)."""
        session = self._pb_session
        if session.closed:
            raise DeadReferenceError(STALE_REFERENCE)
        session.call_remote(self._pb_record.oid, _name, args, kwargs, answer_required=False)

    def call(self, _name: str, *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """Blocking call with an optional timeout; returns the answer.

        Raises:
            the remote exception, :class:`~syncpb.errors.CallTimeout`,
            :class:`~syncpb.errors.ConnectionLost` or
            :class:`~syncpb.errors.DeadReferenceError`.
        """
        session = self._pb_session
        if session.closed:
            raise DeadReferenceError(STALE_REFERENCE)
        return session.call_blocking(self._pb_record.oid, _name, args, kwargs,
                                     session.call_timeout if timeout is None else timeout)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        # Define the blocking method on the class, so later lookups of this
        # name find it directly instead of failing into __getattr__ (which
        # costs an AttributeError per call). It is a plain function taking
        # ``self``: no reference cycle keeps a dropped proxy alive.
        # (the session's factory: the compiled core's twin of _blocking_method when built)
        method = getattr(self._pb_session, "blocking_method", _blocking_method)(name)
        setattr(RemoteReference, name, method)
        bound: Callable[..., Any] = method.__get__(self, RemoteReference)
        return bound

    def notifyOnDisconnect(self, callback: Callable[["RemoteReference"], Any]) -> None:  # noqa: N802
        """Call ``callback(self)`` when the connection is lost."""
        self._pb_notify.append(callback)
        self._pb_session.notify_on_disconnect(self._disconnected)

    def dontNotifyOnDisconnect(self, callback: Callable[["RemoteReference"], Any]) -> None:  # noqa: N802
        """Undo :meth:`notifyOnDisconnect`."""
        if callback in self._pb_notify:
            self._pb_notify.remove(callback)
        if not self._pb_notify:
            self._pb_session.dont_notify_on_disconnect(self._disconnected)

    def _disconnected(self) -> None:
        for callback in list(self._pb_notify):
            callback(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteReference):
            return NotImplemented
        return (other._pb_session is self._pb_session
                and other._pb_record.oid == self._pb_record.oid)

    def __hash__(self) -> int:
        return hash((id(self._pb_session), self._pb_record.oid))

    def __repr__(self) -> str:
        return f"<RemoteReference {self._pb_record.oid!r} via {self._pb_session!r}>"

    def __del__(self) -> None:
        if self._pb_counted:
            try:
                self._pb_session.release(self._pb_record)
            except Exception:  # interpreter shutdown, session gone
                pass


def _blocking_method(name: str) -> Callable[..., Any]:
    """The blocking proxy method for remote method ``name``: call on the
    reference's session and wait for the answer. A plain function of
    ``self`` (no reference cycle keeps a dropped proxy alive). The
    compiled sessions' core has its twin (``blocking_method``), which
    sessions hand out when it is built."""

    def blocking_call(self: RemoteReference, *args: Any, **kwargs: Any) -> Any:
        session = self._pb_session
        if session.closed:
            raise DeadReferenceError(STALE_REFERENCE)
        return session.call_blocking(self._pb_record.oid, name, args, kwargs,
                                     session.call_timeout)

    blocking_call.__name__ = blocking_call.__qualname__ = name
    return blocking_call


class RemoteCacheObserver:
    """The owner's handle on one connection's copy of a Cacheable.

    Given to :meth:`~syncpb.cache.Cacheable.getStateToCacheAndObserveFor`
    (and the same object to ``stoppedObserving``). ``callRemote("name",
    ...)`` runs ``observe_name(...)`` on the holder's RemoteCache and
    returns a Deferred; updates arrive in the order they were sent. Two
    observers are equal when they stand for the same connection, object
    and perspective.
    """

    def __init__(self, session: Any, cacheable: Any, perspective: Any) -> None:
        self.session = session
        self.cacheable = cacheable
        self.perspective = perspective

    def callRemote(self, _name: str, *args: Any, **kwargs: Any) -> "Deferred":  # noqa: N802
        """Send an update; return the Deferred of the holder's answer.

        Raises:
            DeadReferenceError: the connection is closed or the holder has
                dropped its copy.
        """
        if self.session.closed:
            raise DeadReferenceError(STALE_REFERENCE)
        if isinstance(_name, bytes):
            _name = _name.decode("utf-8")
        d: Deferred = self.session.call_remote(None, _name, args, kwargs,
                                               perspective=self.perspective,
                                               cacheable=self.cacheable)
        return d

    def _key(self) -> tuple[int, int, int]:
        return (id(self.session), id(self.cacheable), id(self.perspective))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteCacheObserver):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"<RemoteCacheObserver of {self.cacheable!r} via {self.session!r}>"
