"""Connecting to a PB server: :func:`connect` and :class:`Connection` (L5).

Every connection is the same kind of object, whoever makes it and
wherever: a plain socket that the calling threads take turns reading, with a
background thread when nobody else does (:mod:`syncpb.threaded`). How a
call waits is decided by each caller, at each call
(:mod:`syncpb.waiting`): inside a running gevent hub only the calling
greenlet waits, anywhere else the calling thread. So one connection serves
OS threads and greenlets of several hubs at once, with or without
monkey-patching.
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Callable, Optional, Tuple, Union

from .broker import Broker, Limits
from .copyable import UnjellyableRegistry
from .deferred import Deferred
from .errors import CallTimeout, ConnectionFailed, ConnectionLost, ProtocolError
from .heartbeat import Heartbeat, start as start_heartbeat
from .jelly import SecurityOptions, with_registry
from .keepalive import KeepaliveOption, apply as apply_keepalive, resolve as keepalive_settings
from .passwords import check_params, derive_key
from .portal import proof, respond
from .reference import RemoteReference
from .threaded import ThreadedSession
from .transport import Address, AddressLike, PeerInfo, open_stream, parse_address
from .unixsocket import peer_credentials
from .waiting import cooperative_hub

__all__ = ["connect", "Connection", "CONNECT_TIMEOUT"]


class Connection:
    """A client connection to a PB server.

    Attributes:
        root: a :class:`~syncpb.reference.RemoteReference` to the server's
            root object.
        address: the address connected to.
    """

    def __init__(self, session: ThreadedSession, address: Address) -> None:
        self._session = session
        self.address = address
        self.root: RemoteReference = session.root_reference()

    @property
    def closed(self) -> bool:
        """True once the connection has ended, for whatever reason."""
        return self._session.closed

    @property
    def peer_info(self) -> PeerInfo:
        """What the transport knows of the server: its address and, on a
        unix socket, its pid/uid/gid (check ``peer_info.unix.uid`` to be sure
        who you are talking to)."""
        return self._session.broker.peer_info  # type: ignore[no-any-return]

    @property
    def broker(self) -> Broker:
        """The connection's sans-IO protocol state (for inspection)."""
        return self._session.broker

    def close(self) -> None:
        """Close the connection; calls still waiting fail with ConnectionLost."""
        self._session.close()

    def notifyOnDisconnect(self, callback: Callable[[], Any]) -> None:  # noqa: N802
        """Call ``callback()`` once when the connection ends."""
        self._session.notify_on_disconnect(callback)

    def dontNotifyOnDisconnect(self, callback: Callable[[], Any]) -> None:  # noqa: N802
        """Undo :meth:`notifyOnDisconnect`."""
        self._session.dont_notify_on_disconnect(callback)

    # -- logins (a server that serves a syncpb.Portal or Twisted's PBServerFactory(portal))

    def login_async(self, username: Union[bytes, str], password: Union[bytes, str],
                    mind: Any = None, salted: bool = False) -> Deferred:
        """Log in with PB's challenge-response (or, with ``salted``, syncpb's
        salted login for servers whose checker keeps salted hashes); a
        Deferred of the avatar's RemoteReference (fails with
        UnauthorizedLogin)."""
        if isinstance(username, str):
            username = username.encode("utf-8")  # Twisted's checkers key users by bytes

        def answer(challenge_and_challenger: Any) -> Deferred:
            challenger: RemoteReference  # the server's challenger object
            challenge, challenger = challenge_and_challenger
            return challenger.callRemote("respond", respond(challenge, password), mind)

        def answer_salted(fields: Any) -> Deferred:
            if not isinstance(fields, tuple) or len(fields) != 6 or type(fields[0]) is not bytes:
                raise ProtocolError("malformed answer to loginSalted")
            challenger: RemoteReference
            challenge, salt, n, r, p, challenger = fields
            key = derive_key(password, *check_params(salt, n, r, p))
            return challenger.callRemote("respond", proof(key, challenge), mind)

        if salted:
            return self.root.callRemote("loginSalted", username).addCallback(answer_salted)
        return self.root.callRemote("login", username).addCallback(answer)

    def login(self, username: Union[bytes, str], password: Union[bytes, str],
              mind: Any = None, timeout: Optional[float] = None,
              salted: bool = False) -> RemoteReference:
        """Log in and return the avatar (a RemoteReference to its
        ``perspective_`` methods).

        Raises:
            UnauthorizedLogin: unknown user or wrong password; the
                connection stays usable for another attempt.
            UnhandledCredentials: the server checks no logins of this kind
                (its message says when the other kind, ``salted``, works).
            CallTimeout, ConnectionLost.
        """
        avatar: RemoteReference = self.login_async(username, password, mind, salted).result(
            timeout=timeout)
        return avatar

    def login_anonymous_async(self, mind: Any = None) -> Deferred:
        """Anonymous login; a Deferred of the avatar's RemoteReference."""
        return self.root.callRemote("loginAnonymous", mind)

    def login_anonymous(self, mind: Any = None,
                        timeout: Optional[float] = None) -> RemoteReference:
        """Anonymous login; the avatar. Raises UnhandledCredentials when the
        server allows none."""
        avatar: RemoteReference = self.login_anonymous_async(mind).result(timeout=timeout)
        return avatar

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Connection to {self.address}{' closed' if self.closed else ''}>"


#: Seconds :func:`connect` allows, by default, for reaching the server and
#: completing the TLS and PB handshakes together.
CONNECT_TIMEOUT = 10.0


def connect(address: Union[AddressLike, Address], timeout: Optional[float] = CONNECT_TIMEOUT, *,
            security: Optional[SecurityOptions] = None, limits: Limits = Limits(),
            unsafe_tracebacks: bool = False,
            call_timeout: Optional[float] = None,
            registry: Optional[UnjellyableRegistry] = None,
            tls: Any = None, keepalive: KeepaliveOption = True,
            heartbeat: Optional[Heartbeat] = None) -> Connection:
    """Connect to a PB server and wait until it is ready for calls.

    Args:
        address: ``"tcp://host:port"``, ``"unix:///path"``,
            ``"tls://host:port"``, ``"tls+unix:///path"`` or ``(host, port)``.
        timeout: seconds allowed for reaching the server and completing the
            TLS and PB handshakes, all together (default
            :data:`CONNECT_TIMEOUT`, 10 s); ``None`` waits as long as the
            OS and the peer take, possibly for ever.
        security: the allow-list for what this connection may decode.
        limits: per-connection limits (Twisted's defaults).
        unsafe_tracebacks: send full tracebacks when our methods fail.
        call_timeout: seconds a blocking proxy call (``ref.name(...)``,
            ``ref.call(...)``) waits before raising CallTimeout; None (the
            default) waits for ever. Deferreds are not affected.
        registry: the copy-tag registry this connection builds received
            copies with (default: the process-wide one, or ``security``'s).
        tls: for a ``tls://`` or ``tls+unix://`` address, the
            :func:`syncpb.tls.client_context` (default: verify the server
            against the system's CAs).
        keepalive: TCP keepalive for the connection: True (the default,
            :data:`syncpb.keepalive.DEFAULT`: a vanished peer noticed within
            2 minutes), a :class:`~syncpb.keepalive.Keepalive` with other
            timings, or False. Unix sockets need none.
        heartbeat: a :class:`~syncpb.heartbeat.Heartbeat` that calls a
            method of the server's root periodically and closes the
            connection when no answer comes in time (off by default); it
            notices what keepalive cannot: a hung server process, a proxy
            that stopped forwarding.

    Raises:
        TLSError: (a subclass, also a ConnectionFailed) the TLS handshake
            failed: untrusted or expired certificate, hostname mismatch,
            our client certificate missing or refused, a peer that does not
            speak TLS.
        ConnectionFailed: the server cannot be reached, or did not
            complete the handshake within ``timeout`` (the message names the
            address and what did not arrive).
        ValueError: the address has no recognisable form, or ``tls`` was
            given for a plain address.
    """
    target = parse_address(address)
    probing = keepalive_settings(keepalive)
    security = with_registry(security, registry)
    green = cooperative_hub() is not None
    edge, engine = _tls_for(target, tls)
    deadline = None if timeout is None else time.monotonic() + timeout

    def setup(sock: Any) -> Any:
        try:
            return edge.handshake(sock, engine, _left(deadline))
        except edge.HandshakeTimeout as exc:  # say the whole timeout, not what was left
            raise ConnectionFailed(f"connected to {target}, but no TLS handshake within "
                                   f"{timeout:g} s") from exc
        except ConnectionFailed as exc:
            if type(exc) is not ConnectionFailed:  # a TLSError says what it is itself
                raise
            raise ConnectionFailed(f"connected to {target}, but {exc}") from exc
    sock, early = open_stream(target, timeout, cooperative=green,
                              setup=None if engine is None else setup)
    apply_keepalive(sock, probing)
    broker = Broker(is_client=True, security=security, limits=limits,
                    unsafe_tracebacks=unsafe_tracebacks,
                    peer_info=PeerInfo(str(target), unix=peer_credentials(sock),
                                       certificate=None if engine is None
                                       else engine.peer_certificate))
    stream = sock if engine is None else edge.TLSStream(sock, engine)
    session = ThreadedSession(stream, broker, str(target))
    session.call_timeout = call_timeout
    if early:
        session.feed(early)  # the server's first PB bytes came with the TLS handshake
    if green:
        session.start()  # a greenlet never reads: the background thread reads the handshake
    _await_handshake(session, target, timeout, _left(deadline), edge)
    session.start()
    connection = Connection(session, target)
    if heartbeat is not None:
        start_heartbeat(heartbeat, connection.root, session)
    return connection


def _left(deadline: Optional[float]) -> Optional[float]:
    """Seconds left until ``deadline`` (None: no deadline)."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _tls_for(target: Address, tls: Any) -> Tuple[Any, Any]:
    """The TLS module and a client engine for ``target`` (None, None for plain)."""
    if not target.is_tls:
        if tls is not None:
            raise ValueError(f"tls= given for {target}; use a tls:// or tls+unix:// address")
        return None, None
    edge = importlib.import_module("syncpb.tls.stream")  # OpenSSL only when TLS is used
    if tls is None:
        tls = importlib.import_module("syncpb.tls.context").client_context()
    return edge, edge.client_engine(tls, target.scheme, target.host)


def _await_handshake(session: ThreadedSession, target: Address, timeout: Optional[float],
                     left: Optional[float], edge: Any) -> None:
    """Wait for the PB handshake; say clearly why it did not come."""
    try:
        session.ready.result(timeout=left)
    except CallTimeout:
        # The caller gets ConnectionFailed; the ready Deferred's own failure
        # (from the close below) is ours to consume, not an unhandled error.
        session.ready.addErrback(lambda failure: None)
        session.close("no PB handshake in time")
        hint = "" if target.is_tls else " A TLS port needs tls://... and tls="
        raise ConnectionFailed(
            f"connected to {target}, but no PB handshake arrived within {timeout:g} s "
            f"(is it a PB server?{hint})") from None
    except ConnectionLost as exc:
        failure = None if edge is None else edge.tls_failure_of(exc)
        if failure is not None:  # e.g. a TLS 1.3 server refusing our certificate late
            raise failure from None
        raise ConnectionFailed(f"PB handshake with {target} failed: {exc}") from exc
