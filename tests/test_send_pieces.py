"""Writing a message's pieces: syncpb.transport.send_pieces(_nowait).

Theory: the encoder hands a session a message as pieces (one per token, a
long string payload as its own piece). A gevent server writes them without
waiting (``send_pieces_nowait``): large payloads go to ``sendmsg`` where
they are, and whatever the socket does not take comes back, in order, for
the session to queue. These tests run real socket pairs with a small send
buffer, read everything on the other end and require the exact bytes.
"""

from __future__ import annotations

import socket
import threading
from typing import List

import pytest

from syncpb.transport import gather, send_pieces, send_pieces_nowait

pytestmark = pytest.mark.timeout(30)

DONTWAIT = int(socket.MSG_DONTWAIT)


def message() -> List[bytes]:
    """A header, a 1 MiB payload, small tokens, a 64 KiB payload."""
    return [b"\x01\x80", bytes(range(256)) * 4096, b"\x03\x82", b"ab", b"x" * 65536, b"\x81"]


def read_all(sock: socket.socket, size: int, into: List[bytes]) -> None:
    got = 0
    while got < size:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return
        into.append(chunk)
        got += len(chunk)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    yield a, b
    a.close()
    b.close()


def test_gather_joins_small_pieces_and_keeps_large_ones(pair) -> None:
    a, _ = pair
    pieces = message()
    buffers = gather(pieces, a)
    assert b"".join(buffers) == b"".join(pieces)
    assert buffers[1] is pieces[1] and buffers[3] is pieces[4]  # written from where they are
    assert buffers[0] == pieces[0] and buffers[2] == b"\x03\x82ab"
    assert gather([b"a", b"b"], a) == [b"ab"]  # a small total: one buffer


def test_nowait_returns_what_the_socket_did_not_take_in_order(pair) -> None:
    a, b = pair
    pieces = message()
    whole = b"".join(pieces)
    left = send_pieces_nowait(a, pieces, DONTWAIT)
    assert left, "1 MiB cannot fit a 16 KiB send buffer"
    assert sum(map(len, left)) < len(whole)
    got: List[bytes] = []
    reader = threading.Thread(target=read_all, args=(b, len(whole), got))
    reader.start()
    a.setblocking(True)
    for buffer in left:
        a.sendall(buffer)
    reader.join(10)
    assert b"".join(got) == whole


def test_nowait_on_a_full_socket_gives_everything_back(pair) -> None:
    a, b = pair
    a.setblocking(False)
    try:  # fill the socket first
        while True:
            a.send(b"f" * 65536)
    except BlockingIOError:
        pass
    pieces = message()
    left = send_pieces_nowait(a, pieces, DONTWAIT)
    assert b"".join(left) == b"".join(pieces)


def test_nowait_when_everything_fits(pair) -> None:
    a, b = pair
    assert send_pieces_nowait(a, [b"\x01\x80", b"\x03\x82", b"ok"], DONTWAIT) == []
    assert b.recv(100) == b"\x01\x80\x03\x82ok"


def test_nowait_on_a_closed_peer_raises(pair) -> None:
    a, b = pair
    b.close()
    with pytest.raises(OSError):
        send_pieces_nowait(a, message(), DONTWAIT | socket.MSG_NOSIGNAL)


def test_blocking_send_pieces_writes_everything(pair) -> None:
    a, b = pair
    pieces = message()
    whole = b"".join(pieces)
    got: List[bytes] = []
    reader = threading.Thread(target=read_all, args=(b, len(whole), got))
    reader.start()
    send_pieces(a, pieces)
    reader.join(10)
    assert b"".join(got) == whole


def test_the_read_buffer_is_reused_per_thread() -> None:
    from syncpb.transport import READ_SIZE, read_buffer
    view, area = read_buffer()
    assert read_buffer()[1] is area and len(view) == READ_SIZE
    other: List[object] = []
    thread = threading.Thread(target=lambda: other.append(read_buffer()[1]))
    thread.start()
    thread.join(10)
    assert other and other[0] is not area


def test_a_large_message_is_read_whole_through_the_buffer(pair) -> None:
    from syncpb.transport import read_buffer
    a, b = pair
    whole = bytes(range(256)) * 2048  # 512 KiB
    writer = threading.Thread(target=a.sendall, args=(whole,))
    writer.start()
    got = b""
    while len(got) < len(whole):
        view, area = read_buffer()
        got += view[:b.recv_into(area)].tobytes()
    writer.join(10)
    assert got == whole
