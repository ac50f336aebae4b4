"""The gevent-cooperative PB server (layer L5).

Theory of operation
-------------------
A :class:`Server` publishes one root object on any number of listeners
(``tcp://`` and ``unix://`` addresses). It runs a gevent hub in the thread
that calls :meth:`Server.serve_forever`, or in a background thread started
by :meth:`Server.start`; the host program needs no monkey-patching. Each
accepted connection gets a greenlet that reads it and a
:class:`~syncpb.green.GreenSession`; incoming calls run inline in that
greenlet until one waits (on a gevent socket, ``gevent.sleep``, or a
Deferred it returned), which then keeps the greenlet while a new one takes
over reading, so a waiting method never stalls other calls on the same or
other connections. Methods that block in ordinary, non-gevent
code would stall the hub, so they run in a thread pool: those marked with
:func:`syncpb.adapters.blocking`, or every method with
``blocking_methods=True``. The pool is the server's own (``pool=``), which
:meth:`Server.stop` drains and closes, or else ``syncpb.adapters``'
process-wide one, reached only when such a method is first called.

Listening sockets are bound in the caller's thread by :meth:`listen`, so
the bound address (port 0 resolved) is known at once, even before serving.
:meth:`stop` may be called from any thread.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time
import socket as stdlib_socket
from typing import Any, Dict, List, Optional, Set, Tuple

from .broker import Broker, Limits
from .errors import ConnectionFailed, SyncPBError, format_seconds
from .copyable import UnjellyableRegistry
from . import heap
from .deferred import Deferred
from .jelly import SecurityOptions, with_registry
from .keepalive import KeepaliveOption, apply as apply_keepalive, resolve as keepalive_settings
from .green import GreenSession
from .osthreads import OSFlag, OSThread
from .portal import LoginRoot
from .session import _get_ident
from .transport import Address, AddressLike, PeerInfo, bind_listener, parse_address
from .unixsocket import peer_credentials, tune, unlink_unix

__all__ = ["Server"]

log = logging.getLogger("syncpb")


class _Offload:
    """Runs the server's blocking methods in its thread pool."""

    def __init__(self, pool: Any, everything: bool) -> None:
        self.pool = pool
        self.everything = everything

    def submit(self, method: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Deferred:
        pool = self.pool
        if pool is None:  # the process-wide pool: syncpb.adapters is the one place for pools
            pool = importlib.import_module("syncpb.adapters").default_pool()
        return pool.submit(method, *args, **kwargs)  # type: ignore[no-any-return]


def _left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


class _RateLimitedLog:
    """A warning repeated by a flood, logged at most once per ``every`` seconds
    with the count since the last line."""

    def __init__(self, message: str, every: float = 10.0) -> None:
        self.message = message
        self.every = every
        self.count = 0
        self.last = -every

    def note(self, *args: Any) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            log.warning(self.message, self.count, *args)
            self.count, self.last = 0, now


class Server:
    """Serve a root object over PB.

    Args:
        root: the object published as ``b'root'`` on every connection
            (a :class:`~syncpb.flavors.Root` may give each its own).
        security: allow-list for decoding, shared by all of this server's
            connections (a change applies to messages read afterwards); by
            default the server makes one with the basic types.
        registry: the copy-tag registry received copies are built with
            (default: the process-wide one, or ``security``'s).
        limits: per-connection limits (Twisted's defaults).
        unsafe_tracebacks: send full tracebacks of failing methods to peers.
        pool: the :class:`syncpb.adapters.ThreadPool` that blocking methods
            run in; the server owns it, and :meth:`stop` drains and stops
            it. Default: the process-wide pool (never stopped by a server).
        blocking_methods: run every remote method in the pool, not only
            those marked with :func:`syncpb.adapters.blocking` (for code
            that is not gevent-safe).
        handshake_timeout: seconds a new connection has to complete the TLS
            and PB handshakes together; a client that does not is dropped
            (None: no limit).
        keepalive: TCP keepalive on accepted TCP connections: True (the
            default, :data:`syncpb.keepalive.DEFAULT`: a client that
            vanished without closing is dropped within 2 minutes), a
            :class:`~syncpb.keepalive.Keepalive`, or False.
        backlog: connections the kernel queues for each listener before
            they are accepted (capped by the system's somaxconn).
        max_connections: connections served at once; beyond it new ones
            are closed as soon as they are accepted, with a logged warning
            (None: no limit).
        login_timeout: with a :class:`~syncpb.Portal` as root, seconds a
            connection has from the PB handshake to its first successful
            login; one that has none by then is closed (None: no limit).
        message_timeout: seconds a message may take to arrive once it has
            begun; a connection that leaves one incomplete longer (holding
            its buffer) is closed (None, the default: no limit).
        stop_timeout: what :meth:`serve_forever`'s SIGTERM/SIGINT handlers
            give in-flight calls (see :meth:`stop`).
    """

    def __init__(self, root: Any, *, security: Optional[SecurityOptions] = None,
                 limits: Limits = Limits(), unsafe_tracebacks: bool = False,
                 registry: Optional[UnjellyableRegistry] = None,
                 pool: Any = None, blocking_methods: bool = False,
                 handshake_timeout: Optional[float] = 10.0,
                 keepalive: KeepaliveOption = True, backlog: int = 1024,
                 max_connections: Optional[int] = None,
                 login_timeout: Optional[float] = 60.0,
                 message_timeout: Optional[float] = None,
                 stop_timeout: float = 10.0) -> None:
        self.root = root
        self.keepalive = keepalive_settings(keepalive)
        self.backlog = backlog
        self.max_connections = max_connections
        self.login_timeout = login_timeout
        self.message_timeout = message_timeout
        self.stop_timeout = stop_timeout
        self._accepted = 0  # connections being served, handshakes included
        self._refusals = _RateLimitedLog("refused %d connection(s): max_connections=%s reached")
        self.handshake_timeout = handshake_timeout
        self.pool = pool
        self._offload = _Offload(pool, blocking_methods)
        self._stop_timeout: Optional[float] = 10.0
        self.security = with_registry(security, registry)
        #: what each connection decodes with: one object for all of them, as
        #: a per-connection copy would cost every idle connection about 1 KiB
        self._security = self.security if self.security is not None else SecurityOptions()
        self.limits = limits
        self.unsafe_tracebacks = unsafe_tracebacks
        self._listeners: List[Tuple[stdlib_socket.socket, Address,
                                    Optional[Tuple[int, int]]]] = []
        self._tls: Dict[int, Any] = {}  # listening socket's fd -> its ServerTLS
        self._servers: List[Any] = []
        self._sessions: Set[GreenSession] = set()
        self._hub: Any = None
        self._hub_thread: Optional[int] = None
        self._stopping: Any = None
        self._running = OSFlag()
        self._stop_requested = OSFlag()
        self._finished: Optional[OSFlag] = None  # set when serve_forever returns
        self._thread: Any = None
        self._error: Optional[BaseException] = None

    # ------------------------------------------------------------ public API

    @property
    def addresses(self) -> List[str]:
        """Every bound address, as strings ``connect()`` accepts."""
        return [str(address) for _, address, _ in self._listeners]

    @property
    def connection_count(self) -> int:
        """Connections currently open."""
        return len(self._sessions)

    def listen(self, address: AddressLike, *, mode: Optional[int] = None,
               tls: Any = None, backlog: Optional[int] = None,
               reuse_port: bool = False) -> str:
        """Bind a listener; return its bound address (port 0 resolved).

        May be called before or while serving, as often as needed; every
        listener serves the same root.

        Args:
            address: ``tcp://host:port``, ``unix:///path``,
                ``tls://host:port`` or ``tls+unix:///path``.
            mode: a unix socket file's permissions (default 0600: only this
                user may connect). A dead server's socket file at the path
                is replaced; a live server's socket, or anything that is not
                a socket, is refused and left alone. The file is removed by
                :meth:`stop`.
            tls: for a ``tls://`` or ``tls+unix://`` address, the
                :func:`syncpb.tls.server_context` (certificate, key, and the
                CA that client certificates must chain to, if any).
            backlog: this listener's accept queue (default: the server's).
            reuse_port: set ``SO_REUSEPORT`` (TCP only) so that other
                processes may listen on the same port and share its
                connections (``syncpb serve --workers``).

        Raises:
            ListenFailed: the address cannot be bound; the message says why
                and, for the common causes, what to do (it is a
                ConnectionFailed, as before, and an OSError).
            ValueError: a TLS address without ``tls``, or ``tls`` for a plain one.
        """
        target = parse_address(address)
        if target.is_tls != (tls is not None):
            raise ValueError(f"{target}: a tls:// or tls+unix:// address needs tls="
                             f"syncpb.tls.server_context(...), and only such an address takes it")
        sock, bound, identity = bind_listener(
            target, backlog=self.backlog if backlog is None else backlog, mode=mode,
            reuse_port=reuse_port)
        self._add_listener(sock, bound, identity, tls)
        return str(bound)

    def adopt(self, sock: stdlib_socket.socket, *, tls: Any = None) -> str:
        """Serve an already listening socket (one handed over by systemd
        socket activation, ``fd://N``, or bound by the caller); return its
        address.

        The server owns the socket from now on and closes it on
        :meth:`stop`; a unix socket's file is left in place (whoever made
        it removes it).

        Args:
            sock: a listening ``SOCK_STREAM`` socket (TCP or unix).
            tls: a :func:`syncpb.tls.server_context` to serve TLS on it.

        Raises:
            ValueError: ``sock`` is not a listening stream socket.
        """
        if sock.type != stdlib_socket.SOCK_STREAM or not sock.getsockopt(
                stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ACCEPTCONN):
            raise ValueError(f"socket {sock.fileno()} is not a listening stream socket")
        name = sock.getsockname()
        if sock.family == stdlib_socket.AF_UNIX:
            path = name.decode() if isinstance(name, bytes) else name
            bound = Address("tls+unix" if tls is not None else "unix", path or "(unnamed)")
        else:
            bound = Address("tls" if tls is not None else "tcp", name[0], name[1])
        self._add_listener(sock, bound, None, tls)
        return str(bound)

    def _add_listener(self, sock: stdlib_socket.socket, bound: Address,
                      identity: Optional[Tuple[int, int]], tls: Any) -> None:
        if tls is not None:
            self._tls[sock.fileno()] = tls
        self._listeners.append((sock, bound, identity))
        if self._hub is not None:
            self._call_in_hub(self._serve_listener, sock)

    def serve_forever(self, handle_signals: bool = True) -> None:
        """Serve in the calling thread until :meth:`stop` is called.

        A server serves once: after :meth:`stop` it cannot be started again.
        In the main thread (and with ``handle_signals``), SIGTERM and
        SIGINT stop it gracefully, as ``stop(timeout=stop_timeout)`` does,
        and, when it has TLS listeners, SIGHUP calls :meth:`reload_tls`
        (a failure is logged and the previous certificate kept); the
        previous handlers are back when it returns.

        Raises:
            SyncPBError: nothing to serve (no :meth:`listen` yet), or the
                server was already stopped.
        """
        import gevent.event
        if self._stop_requested.is_set():
            raise SyncPBError("this server was stopped; make a new one")
        if not self._listeners:
            raise SyncPBError("call listen() before serving")
        self._finished = OSFlag()
        self._hub = gevent.get_hub()
        self._hub_thread = _get_ident()
        self._stopping = gevent.event.Event()
        if self._stop_requested.is_set():  # stop() came while we were setting up
            self._stopping.set()
        watchers = self._handle_signals() if handle_signals else []
        helpers = []
        try:
            for sock, _, _ in self._listeners:
                self._serve_listener(sock)
            if self.message_timeout is not None:
                helpers.append(gevent.spawn(self._watch_messages))
            heap.release_free_memory()  # what start-up freed, if tune_malloc kept it
            self._running.set()
            self._stopping.wait()
        finally:
            for watcher in watchers:
                watcher.cancel()
            gevent.killall(helpers)
            self._shutdown()
            self._finished.set()

    def _handle_signals(self) -> List[Any]:
        """SIGTERM and SIGINT handlers that stop gracefully (main thread only)."""
        import signal
        import gevent
        try:
            signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGTERM))
        except ValueError:  # not the main thread: signals are not ours to take
            return []

        def stop_on(signum: int) -> None:
            log.info("%s received: stopping; in-flight calls get up to %g s",
                     signal.Signals(signum).name, self.stop_timeout)
            self.stop(self.stop_timeout)

        def reload_on(signum: int) -> None:
            try:
                self.reload_tls()
            except Exception as exc:  # noqa: BLE001 - logged; the old files stay in use
                log.error("%s received: the TLS certificate and key could not be reloaded "
                          "(%s); the previous ones stay in use", signal.Signals(signum).name,
                          exc)
            else:
                log.info("%s received: TLS certificate and key reloaded for %d listener(s); "
                         "new connections use them", signal.Signals(signum).name,
                         len(self._tls))

        watchers = [gevent.signal_handler(signum, stop_on, signum)
                    for signum in (signal.SIGTERM, signal.SIGINT)]
        if self._tls and hasattr(signal, "SIGHUP"):
            watchers.append(gevent.signal_handler(signal.SIGHUP, reload_on, signal.SIGHUP))
        return watchers

    def start(self, timeout: Optional[float] = 10.0) -> None:
        """Serve in a background thread; return once it accepts connections.

        Raises:
            SyncPBError: the server did not start within ``timeout``.
        """
        if self._stop_requested.is_set():
            raise SyncPBError("this server was stopped; make a new one")
        self._running = OSFlag()
        self._thread = OSThread(self._serve_in_thread, "syncpb-server")
        self._thread.start()
        if not self._running.wait(timeout):
            raise SyncPBError(f"server did not start: {self._error or 'timed out'}")
        if self._error is not None:
            raise SyncPBError(f"server did not start: {self._error}")

    def stop(self, timeout: Optional[float] = 10.0) -> None:
        """Stop serving gracefully: stop accepting, let calls in flight
        finish and answer, then close every connection.

        Listeners close at once. Calls already running get up to
        ``timeout`` seconds to finish; their answers go out. Calls arriving
        meanwhile are answered at once with an error ("server stopping").
        Then every connection closes: a call still unanswered fails on its
        client with :class:`~syncpb.errors.ConnectionLost`. The server's
        own pool (``pool=``) is stopped within the same time and then
        refuses new work with :class:`~syncpb.errors.PoolClosed`.

        Safe from any thread, before, during or after serving. Waits (up to
        about twice ``timeout``) for :meth:`serve_forever`, in whatever
        thread it runs, to finish, unless called from inside the server.
        """
        self._stop_timeout = timeout
        self._stop_requested.set()
        stopping, finished = self._stopping, self._finished
        if stopping is not None:
            self._call_in_hub(stopping.set)
        elif finished is None:  # never served: just release the listeners
            self._close_listeners()
            if self.pool is not None:
                self.pool.stop(timeout)
        if finished is not None and self._hub_thread != _get_ident():
            finished.wait(None if timeout is None else 2 * timeout + 1)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ------------------------------------------------------------ internals

    def _serve_in_thread(self) -> None:
        try:
            self.serve_forever()
        except BaseException as exc:
            self._error = exc
            self._running.set()
            log.exception("PB server stopped by an error")

    def _call_in_hub(self, function: Any, *args: Any) -> None:
        hub = self._hub
        if _get_ident() == self._hub_thread:
            function(*args)
        elif hub is not None:
            hub.loop.run_callback_threadsafe(function, *args)

    def reload_tls(self) -> None:
        """Load every TLS listener's certificate and key again (renewed
        files): new connections use them, open ones keep going.

        Raises:
            whatever loading raises (the previous certificate stays in use).
        """
        for tls in self._tls.values():
            tls.reload()

    def _serve_listener(self, sock: stdlib_socket.socket) -> None:
        from gevent.server import StreamServer
        sock.setblocking(False)  # gevent accepts only when the hub says it is readable
        tls = self._tls.get(sock.fileno())
        handle = self._handle if tls is None else functools.partial(self._handle, tls=tls)
        server = StreamServer(sock, handle)
        server.start()
        self._servers.append(server)

    def _handle(self, sock: Any, peer: Any, tls: Any = None) -> None:
        limit = self.max_connections
        if limit is not None and self._accepted >= limit:
            self._refusals.note(limit)
            return  # gevent closes the socket: the client sees the connection end
        self._accepted += 1
        try:
            self._serve_connection(sock, peer, tls)
        finally:
            self._accepted -= 1

    def _serve_connection(self, sock: Any, peer: Any, tls: Any) -> None:
        if sock.family in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6):
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
            apply_keepalive(sock, self.keepalive)
        tune(sock)
        import gevent
        import gevent.event
        credentials = peer_credentials(sock)
        name = str(peer) if peer else (
            "unix peer" if credentials is None
            else f"unix peer pid {credentials.pid} uid {credentials.uid}")
        started = time.monotonic()
        stream, certificate, early = sock, None, b""
        if tls is not None:
            try:
                stream, certificate, early = self._tls_handshake(sock, tls)
            except ConnectionFailed as exc:
                log.warning("TLS handshake with %s failed: %s", name, exc)
                return
        broker = Broker(root=self.root, security=self._security, limits=self.limits,
                        unsafe_tracebacks=self.unsafe_tracebacks,
                        peer_info=PeerInfo(name, unix=credentials, certificate=certificate))
        session = GreenSession(stream, broker, name)
        session.offload = self._offload
        session.track_messages = self.message_timeout is not None
        if early:
            session.feed(early)
        if self.handshake_timeout is not None:
            left = max(self.handshake_timeout - (time.monotonic() - started), 0.0)
            gevent.spawn_later(left, self._check_handshake, session)
        if self.login_timeout is not None and isinstance(broker.root_object, LoginRoot):
            gevent.spawn_later(self.login_timeout, self._check_login, session)
        ended = gevent.event.Event()
        self._sessions.add(session)

        def session_ended() -> None:
            self._sessions.discard(session)
            self._call_in_hub(ended.set)

        session.notify_on_disconnect(session_ended)
        session.run()
        # run() returns early when a waiting call handed reading to another
        # greenlet; gevent closes the socket when this handler returns.
        ended.wait()
        self._sessions.discard(session)

    def _tls_handshake(self, sock: Any, tls: Any) -> Tuple[Any, Any, bytes]:
        """The TLS handshake of an accepted connection (only this greenlet waits)."""
        edge = importlib.import_module("syncpb.tls.stream")  # OpenSSL only when TLS is used
        engine = edge.server_engine(tls)
        early = edge.handshake(sock, engine, self.handshake_timeout)
        return edge.TLSStream(sock, engine), engine.peer_certificate, early

    def _check_handshake(self, session: GreenSession) -> None:
        if not session.ready.called and not session.closed:
            log.info("PB connection %s did not complete the handshake within %s",
                     session.name, format_seconds(self.handshake_timeout))
            session.close("no PB handshake in time")

    def _await_calls(self, sessions: List[GreenSession], deadline: Optional[float]) -> None:
        """Let the calls in flight finish, until ``deadline`` (in the hub).

        Polls every 10 ms: only while stopping, and a call's end has no
        single place to signal from (inline, in a greenlet, in the pool)."""
        import gevent
        while any(not s.closed and s.broker.calls_in_progress for s in sessions):
            if deadline is not None and time.monotonic() >= deadline:
                busy = sum(s.broker.calls_in_progress for s in sessions if not s.closed)
                log.warning("stopping with %d call(s) unfinished after the stop timeout; "
                            "their callers get ConnectionLost", busy)
                return
            gevent.sleep(0.01)

    def _check_login(self, session: GreenSession) -> None:
        login_root = session.broker.root_object
        if not session.closed and not login_root.logins:
            reason = f"no successful login within {self.login_timeout:g} s (login_timeout)"
            log.info("closing PB connection %s: %s", session.name, reason)
            session.close(reason)

    def _watch_messages(self) -> None:
        """Close connections that leave a message incomplete too long."""
        import gevent
        limit = self.message_timeout
        assert limit is not None
        while True:
            gevent.sleep(max(limit / 4, 0.01))
            now = time.monotonic()
            for session in list(self._sessions):
                started = session.message_started
                if started is not None and now - started > limit and not session.closed:
                    reason = (f"a message left incomplete for over {limit:g} s "
                              f"(message_timeout)")
                    log.warning("closing PB connection %s: %s", session.name, reason)
                    session.close(reason)

    def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()
        self._servers = []
        for sock, address, identity in self._listeners:
            sock.close()
            if identity is not None:  # only the socket file we made
                try:
                    unlink_unix(address.host, identity)
                except OSError as exc:
                    log.warning("could not remove unix socket %s: %s", address.host, exc)
        self._listeners = []
        self._tls.clear()

    def _shutdown(self) -> None:
        self._close_listeners()
        timeout = self._stop_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        sessions = list(self._sessions)
        for session in sessions:
            session.broker.refuse_calls("server stopping: this call was not run")
        self._await_calls(sessions, deadline)
        if self.pool is not None:  # its calls finish and answer; it refuses new ones
            self.pool.stop(_left(deadline))
        import gevent
        gevent.joinall([gevent.spawn(session.close_after_writing, "server stopping",
                                     _left(deadline)) for session in sessions])
        self._sessions.clear()
        self._hub = self._stopping = None
        self._hub_thread = None
