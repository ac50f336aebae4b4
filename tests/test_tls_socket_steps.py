"""The C record path's socket steps: ``recv_from`` and ``send_to``.

Theory: on gevent, :class:`syncpb.tls.stream.TLSStream` reads and decrypts
in one call into C (``Records.recv_from(fd)``) and encrypts and writes in
another (``Records.send_to(fd, data)``). Each test runs them over a real
socket pair against a second engine, and checks what a socket's own
``recv``/``send`` would promise: every byte arrives once and in order,
"nothing yet" and "the peer closed" are told apart, a full socket keeps
what it did not take, and errors are ``OSError``. The stream tests then run
:class:`TLSStream` on gevent's sockets, where the path is in use. With
``SYNCPB_PURE=1`` (one of ``make test``'s passes) the C path is absent and
only the stream tests run, on the Python path.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from typing import Any, Tuple

import pytest

from syncpb.tls import direct
from syncpb.tls.context import client_context, server_context
from syncpb.tls.engine import TLSEngine
from syncpb.tls.stream import TLSStream

from hubthread import run_in_gevent_thread
from tlscerts import TLSMaterial, shake_hands

pytestmark = pytest.mark.timeout(30)


def engines(material: TLSMaterial) -> Tuple[TLSEngine, TLSEngine]:
    """A client and a server engine, handshake done, in memory."""
    client = TLSEngine(client_context(ca=material.ca.cert_path), False, "localhost")
    server = TLSEngine(server_context(material.server.cert_path, material.server.key_path), True)
    shake_hands(client, server)
    return client, server


@pytest.fixture
def compiled_pair(tls_material: TLSMaterial) -> Any:
    if not direct.compiled():
        if os.environ.get("SYNCPB_PURE") == "1" or os.environ.get("SYNCPB_TLS_DIRECT") == "0":
            pytest.skip("the compiled TLS record path is switched off in this pass")
        if os.environ.get("CI") == "true":
            pytest.fail("the compiled TLS record path was not built")
        pytest.skip("the compiled TLS record path is not built here")
    client, server = engines(tls_material)
    assert client.records is not None and server.records is not None
    a, b = socket.socketpair()
    yield client, server, a, b
    a.close()
    b.close()


def message(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


def receive_all(server: TLSEngine, sock: socket.socket, size: int) -> bytes:
    """recv_from until ``size`` plaintext bytes came (the socket is blocking:
    wait with select between steps)."""
    import select
    got = b""
    while len(got) < size:
        plain, status, _ = server.records.recv_from(sock.fileno())
        if status == direct.AGAIN:
            select.select([sock], [], [], 10)
            continue
        assert status == direct.WANT_MORE
        got += plain
    return got


@pytest.mark.parametrize("size", [1, 60, 16384, 16385, 100_000])
def test_recv_from_decrypts_what_the_socket_holds(compiled_pair: Any, size: int) -> None:
    client, server, a, b = compiled_pair
    data = message(size)
    a.sendall(client.encrypt(data))
    assert receive_all(server, b, size) == data


def test_recv_from_tells_nothing_yet_from_the_end(compiled_pair: Any) -> None:
    client, server, a, b = compiled_pair
    assert server.records.recv_from(b.fileno()) == (b"", direct.AGAIN, 0)
    cipher = client.encrypt(b"hello")
    a.sendall(cipher[:3])  # not even a record header
    assert server.records.recv_from(b.fileno())[:2] == (b"", direct.WANT_MORE)
    a.sendall(cipher[3:])
    assert server.records.recv_from(b.fileno())[:2] == (b"hello", direct.WANT_MORE)
    a.shutdown(socket.SHUT_WR)
    assert server.records.recv_from(b.fileno()) == (b"", direct.END, 0)


def test_recv_from_hands_over_data_and_close_notify_together(compiled_pair: Any) -> None:
    client, server, a, b = compiled_pair
    out = client.encrypt(b"last words")
    client.close()
    a.sendall(out + client.data_to_send())
    plain, status, _ = server.records.recv_from(b.fileno())
    assert (plain, status) == (b"last words", direct.CLOSED)


def test_recv_from_a_closed_socket_raises(compiled_pair: Any) -> None:
    _, server, _, b = compiled_pair
    with pytest.raises(OSError) as caught:
        server.records.recv_from(-1)  # what a closed socket's fileno() gives
    assert caught.value.errno == errno.EBADF
    b.close()
    with pytest.raises(OSError):
        server.records.recv_from(b.fileno())


def test_a_step_decrypting_more_than_its_scratch_buffer(compiled_pair: Any) -> None:
    """A record held back from before plus a piece under 64 KiB can complete
    more than 64 KiB of plaintext: the step must go on past its scratch
    buffer and lose nothing."""
    client, server, a, b = compiled_pair
    data = message(200_000)
    cipher = client.encrypt(data)
    record = 5 + 16384 + 1 + 16  # one full TLS 1.3 AES-GCM record
    got = server.records.receive(cipher[:record - 1])[0]
    assert got == b""
    step = 1 + 3 * record + 100  # under 64 KiB, it completes 4 records: 64 KiB exactly
    assert step < 64 * 1024
    got += server.records.receive(cipher[record - 1:record - 1 + step])[0]
    assert len(got) == 4 * 16384
    got += server.records.receive(cipher[record - 1 + step:])[0]
    assert got == data


def test_send_to_writes_what_the_socket_takes_and_keeps_the_rest(compiled_pair: Any) -> None:
    client, server, a, b = compiled_pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    data = message(1 << 20)
    written, rest, _ = client.records.send_to(a.fileno(), data)
    assert written == len(data)
    assert rest, "a 1 MiB write cannot fit a 16 KiB socket buffer"
    writer = threading.Thread(target=a.sendall, args=(rest,))
    writer.start()
    try:
        assert receive_all(server, b, len(data)) == data
    finally:
        writer.join(10)


def test_send_to_a_small_message_leaves_nothing(compiled_pair: Any) -> None:
    client, server, a, b = compiled_pair
    assert client.records.send_to(a.fileno(), b"add(1, 2)")[:2] == (9, b"")
    assert receive_all(server, b, 9) == b"add(1, 2)"


def test_send_to_a_closed_peer_raises_without_a_signal(compiled_pair: Any) -> None:
    client, _, a, b = compiled_pair
    b.close()
    with pytest.raises(OSError) as caught:  # not SIGPIPE: the test process lives on
        client.records.send_to(a.fileno(), b"x" * 1000)
    assert caught.value.errno in (errno.EPIPE, errno.ECONNRESET)


def test_send_to_after_close_takes_the_engine_path(compiled_pair: Any) -> None:
    client, _, _, _ = compiled_pair
    client.close()
    assert client.records is None  # the stream then asks the engine, which refuses


# ------------------------------------------------------------ TLSStream on gevent


def gevent_streams(material: TLSMaterial) -> Tuple[TLSStream, TLSStream]:
    from gevent import socket as gsocket
    client, server = engines(material)
    a, b = gsocket.socketpair()
    return TLSStream(a, client), TLSStream(b, server)


def test_a_gevent_reader_waits_for_its_data(tls_material: TLSMaterial) -> None:
    def scenario() -> None:
        import gevent
        left, right = gevent_streams(tls_material)
        try:
            assert right._read_first == direct.compiled()
            reader = gevent.spawn(right.recv, 65536)
            gevent.idle()  # the reader now waits on the hub: nothing has been sent
            assert not reader.ready()
            left.sendall(b"ping")
            assert reader.get(timeout=10) == b"ping"
            left.send(b"pong", socket.MSG_DONTWAIT)
            assert right.recv(65536) == b"pong"
        finally:
            left.close()
            right.close()
    run_in_gevent_thread(scenario)


def test_a_gevent_reader_sees_the_end(tls_material: TLSMaterial) -> None:
    def scenario() -> None:
        import gevent
        left, right = gevent_streams(tls_material)
        try:
            reader = gevent.spawn(right.recv, 65536)
            gevent.idle()
            left.close()  # close_notify, then the socket closes
            assert reader.get(timeout=10) == b""
            assert right._engine.closed_by_peer
        finally:
            right.close()
    run_in_gevent_thread(scenario)


def test_a_gevent_reader_whose_socket_closes_under_it_fails(tls_material: TLSMaterial) -> None:
    def scenario() -> None:
        import gevent
        left, right = gevent_streams(tls_material)
        try:
            reader = gevent.spawn(right.recv, 65536)
            gevent.idle()
            right._inner.close()
            with pytest.raises(OSError):
                reader.get(timeout=10)
        finally:
            left.close()
    run_in_gevent_thread(scenario)
