"""Dead peers: TCP keepalive options, and the PB heartbeat through a proxy
that stops forwarding without closing (which keepalive cannot notice)."""

from __future__ import annotations

import socket
import threading
from typing import List

import pytest

import syncpb
from syncpb import tls
from syncpb.deferred import Deferred

WAIT = 20.0  # far above every heartbeat bound used here


class Service(syncpb.Root):
    def __init__(self) -> None:
        self.pings = 0
        self.held: List[Deferred] = []

    def remote_ping(self) -> str:
        self.pings += 1
        return "pong"

    def remote_hold(self) -> Deferred:
        d = Deferred()  # answered never: a call in flight when the path dies
        self.held.append(d)
        return d


def keepalive_of(sock: socket.socket):
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))


def raw_socket(conn: syncpb.Connection) -> socket.socket:
    sock = conn._session.sock
    return getattr(sock, "sock", sock)  # a TLS stream wraps the socket


def accepted_socket(server: syncpb.Server) -> socket.socket:
    (session,) = server._sessions
    sock = session.sock
    return getattr(sock, "sock", sock)


def test_keepalive_is_on_by_default_on_both_ends(server_factory, connect):
    server, address = server_factory(Service())
    conn = connect(address)
    assert conn.root.ping() == "pong"
    default = syncpb.keepalive.DEFAULT
    expected = (1, default.idle, default.interval, default.count)
    assert keepalive_of(raw_socket(conn)) == expected
    assert keepalive_of(accepted_socket(server)) == expected
    assert default.bound == 120


def test_keepalive_timings_are_tunable_and_can_be_turned_off(server_factory, connect):
    server, address = server_factory(Service(), keepalive=syncpb.Keepalive(idle=7, interval=3,
                                                                           count=2))
    conn = connect(address, keepalive=syncpb.Keepalive(idle=11, interval=5, count=3))
    assert conn.root.ping() == "pong"
    assert keepalive_of(raw_socket(conn)) == (1, 11, 5, 3)
    assert keepalive_of(accepted_socket(server)) == (1, 7, 3, 2)
    off = connect(address, keepalive=False)
    assert off.root.ping() == "pong"
    assert raw_socket(off).getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


def test_keepalive_options_are_checked():
    with pytest.raises(ValueError, match="idle"):
        syncpb.Keepalive(idle=0)
    with pytest.raises(ValueError, match="interval"):
        syncpb.Keepalive(interval=1.5)  # the kernel takes whole seconds
    with pytest.raises(TypeError, match="keepalive="):
        syncpb.connect("tcp://127.0.0.1:1", keepalive=30)
    with pytest.raises(ValueError, match="remote method"):
        syncpb.Heartbeat("")


def test_unix_connections_need_no_keepalive(server_factory, connect):
    _, address = server_factory(Service(), unix=True)
    assert connect(address).root.ping() == "pong"  # keepalive=True is ignored there


class FreezingProxy:
    """A TCP proxy that, once frozen, keeps both connections open and
    forwards nothing more: a peer gone silent without a FIN."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: List[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        self.sockets += [client, upstream]
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if not self.frozen.is_set():
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass


@pytest.fixture
def proxy_to():
    proxies = []

    def make(address: str) -> FreezingProxy:
        proxy = FreezingProxy(int(address.rsplit(":", 1)[1]))
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.mark.parametrize("secure", [False, True], ids=["tcp", "tls"])
def test_the_heartbeat_notices_a_path_that_stopped_forwarding(server_factory, connect, proxy_to,
                                                              tls_material, secure):
    service = Service()
    server, address = server_factory(service, start=False)
    if secure:
        address = server.listen("tls://127.0.0.1:0", tls=tls.server_context(
            cert=tls_material.server.cert_path, key=tls_material.server.key_path))
    server.start()
    proxy = proxy_to(address)
    scheme = "tls" if secure else "tcp"
    options = {"tls": tls.client_context(ca=tls_material.ca.cert_path)} if secure else {}
    answered = threading.Event()
    beat = syncpb.Heartbeat("ping", interval=0.05, timeout=0.5,
                            on_answer=lambda seconds: answered.set())
    conn = connect(f"{scheme}://127.0.0.1:{proxy.port}", heartbeat=beat, **options)
    ended = []
    gone = threading.Event()
    conn.notifyOnDisconnect(lambda: (ended.append(1), gone.set()))
    assert answered.wait(WAIT)  # beats go through while the path works
    in_flight = conn.root.callRemote("hold")
    proxy.frozen.set()
    with pytest.raises(syncpb.ConnectionLost, match="heartbeat: no answer to 'ping'"):
        in_flight.result(timeout=WAIT)  # not CallTimeout: the heartbeat ended it
    assert gone.wait(WAIT) and conn.closed
    with pytest.raises(syncpb.DeadReferenceError):
        conn.root.callRemote("ping")
    conn.close()
    assert ended == [1]  # notifyOnDisconnect ran exactly once
    assert service.pings >= 1


def test_the_heartbeat_keeps_a_healthy_connection_and_ends_with_it(server_factory, connect):
    service = Service()
    _, address = server_factory(service)
    beats = threading.Semaphore(0)
    conn = connect(address, heartbeat=syncpb.Heartbeat("ping", interval=0.01, timeout=WAIT,
                                                         on_answer=lambda s: beats.release()))
    for _ in range(5):
        assert beats.acquire(timeout=WAIT)
    assert not conn.closed and conn.root.ping() == "pong"
    conn.close()
    assert service.pings >= 6


def test_a_missing_method_still_proves_the_peer_alive(server_factory, connect):
    _, address = server_factory(Service())
    beats = threading.Semaphore(0)
    conn = connect(address, heartbeat=syncpb.Heartbeat("noSuchThing", interval=0.01,
                                                         timeout=WAIT,
                                                         on_answer=lambda s: beats.release()))
    for _ in range(3):
        assert beats.acquire(timeout=WAIT)
    assert not conn.closed
