"""One conformance suite for every transport: TCP, unix, TLS over TCP, TLS over unix.

Each test runs once per transport, against a real server on 127.0.0.1 or a
unix socket in a temporary directory, with certificates minted for the
session (``tls_material``). One service listens on all four at once, so the
same objects answer whichever listener a client came through.
"""

from __future__ import annotations

import hashlib
import socket
import threading

import gevent
import pytest

import syncpb
from syncpb import tls, util

from hubthread import run_in_gevent_thread

WAIT = 10.0
TRANSPORTS = ["tcp", "unix", "tls", "tls+unix"]
BIG = bytes(range(256)) * 2048  # 512 KiB


class Counter(syncpb.Referenceable):
    def __init__(self):
        self.value = 0

    def remote_increment(self, by=1):
        self.value += by
        return self.value


class Service(syncpb.Root):
    def __init__(self):
        self.counter = Counter()
        self.seen = []

    def rootObject(self, broker):  # noqa: N802 - Twisted's name
        self.seen.append(broker.peer_info)
        return self

    def remote_echo(self, value):
        return value

    def remote_counter(self):
        return self.counter

    def remote_call_back(self, ref, value):
        return ref.callRemote("take", value)

    def remote_download(self, collector, size):
        util.StringPager(collector, BIG[:size], 64 * 1024)

    def remote_fail(self):
        raise ValueError("on purpose")


class Taker(syncpb.Referenceable):
    def remote_take(self, value):
        return ("taken", value)


@pytest.fixture(scope="module")
def everywhere(tls_material, tmp_path_factory):
    """One server listening on all four transports; (service, addresses, client TLS)."""
    directory = tmp_path_factory.mktemp("transports")
    service = Service()
    server = syncpb.Server(service)
    server_tls = tls.server_context(cert=tls_material.server.cert_path,
                                    key=tls_material.server.key_path,
                                    ca=tls_material.ca.cert_path)
    addresses = {
        "tcp": server.listen("tcp://127.0.0.1:0"),
        "unix": server.listen(f"unix://{directory}/plain"),
        "tls": server.listen("tls://127.0.0.1:0", tls=server_tls),
        "tls+unix": server.listen(f"tls+unix://{directory}/tls", tls=server_tls),
    }
    server.start()
    client_tls = {
        "tls": tls.client_context(ca=tls_material.ca.cert_path,
                                  cert=tls_material.client.cert_path,
                                  key=tls_material.client.key_path),
        "tls+unix": tls.client_context(ca=tls_material.ca.cert_path,
                                       cert=tls_material.client.cert_path,
                                       key=tls_material.client.key_path,
                                       server_hostname="pb.test"),
    }
    yield service, addresses, client_tls
    server.stop(WAIT)


@pytest.fixture(params=TRANSPORTS)
def conn(request, everywhere, connect):
    _, addresses, client_tls = everywhere
    return connect(addresses[request.param], tls=client_tls.get(request.param),
                   call_timeout=WAIT)


def test_calls_and_errors(conn):
    assert conn.root.echo({"a": [1, 2.5, None, True, b"x", "é"]}) == \
        {"a": [1, 2.5, None, True, b"x", "é"]}
    assert [conn.root.callRemote("echo", i).result(timeout=WAIT) for i in range(50)] == \
        list(range(50))
    with pytest.raises(syncpb.RemoteError, match="on purpose"):
        conn.root.fail()


def test_references_both_ways_and_shared_objects(conn, everywhere):
    service = everywhere[0]
    counter = conn.root.counter()
    before = service.counter.value
    assert counter.increment(2) == before + 2   # the same object behind every listener
    assert conn.root.call_back(Taker(), 7) == ("taken", 7)


def test_paging(conn):
    data = util.get_all_pages(conn.root, "download", len(BIG), timeout=WAIT)
    assert hashlib.sha256(data).digest() == hashlib.sha256(BIG).digest()


def test_large_messages_both_ways(conn):
    payload = [bytes([n]) * (600 * 1024) for n in range(4)]  # 2.4 MiB in one message
    assert conn.root.echo(payload) == payload


def test_many_threads_and_greenlets_share_it(conn):
    results, errors = {}, []

    def thread(n):
        try:
            results[n] = [conn.root.echo([n, i]) for i in range(20)]
        except BaseException as exc:
            errors.append(exc)

    def greenlets():
        spawned = [gevent.spawn(conn.root.echo, ["g", i]) for i in range(20)]
        gevent.joinall(spawned, timeout=WAIT, raise_error=True)
        return [g.value for g in spawned]

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    assert run_in_gevent_thread(greenlets) == [["g", i] for i in range(20)]
    for t in threads:
        t.join(WAIT)
    assert errors == [] and results == {n: [[n, i] for i in range(20)] for n in range(4)}


def test_the_peer_closing_abruptly_fails_pending_calls(everywhere, connect, request):
    """The server side drops the connection mid-call: the caller gets
    ConnectionLost, not a hang, and the service keeps serving."""
    service, addresses, client_tls = everywhere
    for name in TRANSPORTS:
        conn = connect(addresses[name], tls=client_tls.get(name), call_timeout=WAIT)
        assert conn.root.echo(1) == 1
        dropped = threading.Event()
        conn.notifyOnDisconnect(dropped.set)
        conn._session.sock.shutdown(socket.SHUT_RDWR)  # the wire breaks under the session
        assert dropped.wait(WAIT), name
        with pytest.raises(syncpb.DeadReferenceError):
            conn.root.echo(2)
        again = connect(addresses[name], tls=client_tls.get(name), call_timeout=WAIT)
        assert again.root.echo(3) == 3, name


def test_peer_information_per_transport(everywhere, connect):
    service, addresses, client_tls = everywhere
    for name in TRANSPORTS:
        before = len(service.seen)
        conn = connect(addresses[name], tls=client_tls.get(name), call_timeout=WAIT)
        assert conn.root.echo(name) == name
        seen = service.seen[before]
        assert (seen.unix is not None) == name.endswith("unix"), name
        if name.startswith("tls"):
            assert seen.certificate.common_name == "alice"
            assert conn.peer_info.certificate.common_name == "localhost"
        else:
            assert seen.certificate is None and conn.peer_info.certificate is None
