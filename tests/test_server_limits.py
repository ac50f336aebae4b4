"""Server limits and back-pressure: backlog, connection count, calls in
progress, a peer that does not read, a message left incomplete, a login
that never comes. Each is a parameter, each refusal has a logged reason."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from typing import List

import pytest

import syncpb
from syncpb.deferred import Deferred

from rawpeer import Closed, RawPeer, message

WAIT = 10.0


class Service(syncpb.Root):
    def __init__(self) -> None:
        self.held: List[Deferred] = []
        self.entered = threading.Semaphore(0)

    def remote_ping(self) -> str:
        return "pong"

    def remote_hold(self) -> Deferred:
        d = Deferred()
        self.held.append(d)
        self.entered.release()
        return d

    def remote_bounce(self, ref: syncpb.RemoteReference, x: int) -> Deferred:
        self.entered.release()
        return ref.callRemote("double", x)

    def remote_blob(self, size: int) -> bytes:
        return b"x" * size


class Doubler(syncpb.Referenceable):
    def __init__(self, root: syncpb.RemoteReference) -> None:
        self.root = root

    def remote_double(self, x: int) -> int:
        return 2 * x


def listen_backlog(sock: socket.socket) -> int:
    """The accept-queue size the kernel uses for a listening socket
    (Linux's TCP_INFO reports it as tcpi_sacked for a listener)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 28)[0]


def somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


def test_the_listen_backlog_is_a_parameter(server_factory):
    server, _ = server_factory(Service(), start=False)
    assert listen_backlog(server._listeners[0][0]) == min(1024, somaxconn())
    server.listen("tcp://127.0.0.1:0", backlog=77)
    assert listen_backlog(server._listeners[1][0]) == min(77, somaxconn())
    other = syncpb.Server(Service(), backlog=33)
    try:
        other.listen("tcp://127.0.0.1:0")
        assert listen_backlog(other._listeners[0][0]) == min(33, somaxconn())
    finally:
        other.stop()


def test_connections_beyond_max_connections_are_refused_and_logged(server_factory, connect,
                                                                    caplog):
    _, address = server_factory(Service(), max_connections=2)
    first, second = connect(address), connect(address)
    with caplog.at_level(logging.WARNING, logger="syncpb"):
        with pytest.raises(syncpb.ConnectionFailed, match="PB handshake with"):
            syncpb.connect(address, timeout=WAIT)
    assert any("max_connections=2 reached" in r.getMessage() for r in caplog.records)
    assert first.root.ping() == second.root.ping() == "pong"  # the others go on
    first.close()
    for _ in range(1000):  # until the server has seen the close (each try is a round trip)
        try:
            third = connect(address)
            break
        except syncpb.ConnectionFailed:
            continue
    assert third.root.ping() == "pong"


def test_calls_in_progress_are_finite_by_default():
    assert syncpb.Limits().max_incoming_calls == 1000


def test_a_call_beyond_the_limit_is_refused_at_once_and_callbacks_still_flow(server_factory,
                                                                             connect, caplog):
    service = Service()
    _, address = server_factory(service, limits=syncpb.Limits(max_incoming_calls=2))
    conn = connect(address, limits=syncpb.Limits(max_incoming_calls=1))
    held = [conn.root.callRemote("hold") for _ in range(2)]
    for _ in range(2):
        assert service.entered.acquire(timeout=WAIT)
    with caplog.at_level(logging.WARNING, logger="syncpb"):
        for _ in range(3):
            with pytest.raises(Exception, match="too many calls in progress") as refused:
                conn.root.callRemote("ping").result(timeout=WAIT)
            assert isinstance(refused.value, syncpb.Error)
    told = [r for r in caplog.records if "max_incoming_calls" in r.getMessage()]
    assert len(told) == 1  # once per connection
    for d in service.held:
        d.callback("done")
    assert [d.result(timeout=WAIT) for d in held] == ["done", "done"]
    # The server calls back into the client while the client's own limit is
    # 1: the callback's answer is an answer, never held back by a limit.
    assert conn.root.bounce(Doubler(conn.root), 21) == 42


def test_a_peer_that_does_not_read_is_disconnected(server_factory, caplog):
    _, address = server_factory(Service(),
                                limits=syncpb.Limits(max_unsent_bytes=1024 * 1024))
    with caplog.at_level(logging.WARNING, logger="syncpb"):
        with RawPeer(address) as peer:
            peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            peer.handshake()
            # Ask for 100 KB answers and read none, until the server's close
            # shows: our sends then fail (its socket is gone). Reading to its
            # EOF instead could take minutes: the data already in its kernel
            # buffer trickles through our 4 KB window first.
            with pytest.raises(ConnectionError):
                for _ in range(100_000):  # ~3 MB of calls at most
                    peer.call(b"blob", 100_000)
    assert any("the peer does not read" in r.getMessage() for r in caplog.records)


def test_a_message_left_incomplete_too_long_closes_the_connection(server_factory, connect,
                                                                 caplog):
    _, address = server_factory(Service(), message_timeout=0.3)
    call = message(1, b"root", b"blob", [b"tuple", 10])
    with caplog.at_level(logging.WARNING, logger="syncpb"):
        with RawPeer(address) as peer:
            peer.handshake()
            peer.send(call[:len(call) // 2])  # and never the rest
            assert peer.read_until_closed() == []
    assert any("left incomplete for over 0.3 s" in r.getMessage() for r in caplog.records)
    assert connect(address).root.ping() == "pong"  # complete messages are fine


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):  # noqa: N802
        return syncpb.Avatar()


def test_a_connection_without_a_login_in_time_is_closed(server_factory, connect, caplog):
    portal = syncpb.Portal(Realm(), [syncpb.InMemoryPasswordChecker(alice=b"secret")])
    _, address = server_factory(portal, login_timeout=0.3)
    early = connect(address)
    early.login("alice", "secret")  # its timer fires first, and finds a login
    late = connect(address)
    gone = threading.Event()
    late.notifyOnDisconnect(gone.set)
    with caplog.at_level(logging.INFO, logger="syncpb"):
        assert gone.wait(WAIT)
    assert any("no successful login within 0.3 s" in r.getMessage() for r in caplog.records)
    assert not early.closed
    assert early.root.callRemote("login", b"alice").result(timeout=WAIT)  # still served


def test_stop_lets_calls_in_flight_finish_and_answers_them(server_factory, connect):
    service = Service()
    server, address = server_factory(service)
    conn = connect(address)
    in_flight = conn.root.callRemote("hold")
    assert service.entered.acquire(timeout=WAIT)
    stopper = threading.Thread(target=server.stop, kwargs={"timeout": WAIT})
    stopper.start()
    # New calls are refused while it stops (each try is a round trip):
    for _ in range(1000):
        try:
            conn.root.callRemote("ping").result(timeout=WAIT)
        except syncpb.Error as exc:  # the server's refusal, a pb.Error as in Twisted
            assert "server stopping" in str(exc)
            break
    with pytest.raises(syncpb.ConnectionFailed):
        syncpb.connect(address, timeout=WAIT)  # no longer accepting
    service.held[0].callback("finished")
    assert in_flight.result(timeout=WAIT) == "finished"  # answered before the close
    stopper.join(WAIT)
    assert not stopper.is_alive()
    gone = threading.Event()
    conn.notifyOnDisconnect(gone.set)  # the client learns of the close when it reads it
    assert gone.wait(WAIT)
