"""End to end: connections that break under a call, on real sockets.

The compiled sessions' core reads and writes a plain socket's descriptor
itself (no socket methods); the pure one goes through the socket's
methods. Both must turn every way a socket can fail into the same
outcome: a reset or the end of the stream under a blocking call fails
that call with ConnectionLost naming the cause, a socket closed from
another thread wakes the caller with ConnectionLost, and on the server a
reset or a failed write ends that connection only. The Makefile runs
this file on both twins (``TWIN_TESTS``).

Peers are :mod:`rawpeer`'s hand-driven ones, so each failure happens at a
known point. Nothing sleeps: every wait is an Event or a socket timeout.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any, List, Optional

import pytest

import syncpb

from rawpeer import OFFER, WAIT, HostileServer, RawPeer, read_choice_and_version


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with a reset (RST) instead of an orderly end."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def take_one_call(then: Any, got: Optional[threading.Event] = None) -> Any:
    """A hostile server script: offer, read the client's first call, set
    ``got``, then ``then(stream)``."""
    def script(stream: Any) -> Any:
        stream.send(OFFER)
        read_choice_and_version(stream)
        call = stream.read_message()
        assert call[:4] == [b"message", 1, b"root", b"add"], call
        if got is not None:
            got.set()
        return then(stream)
    return script


# ---------------------------------------------------------------- client side

@pytest.mark.parametrize("end,cause", [
    (lambda stream: reset(stream.sock), "read failed: .*Connection reset"),
    (lambda stream: stream.sock.close(), "closed by peer"),
], ids=["reset", "end-of-stream"])
def test_a_connection_ending_under_a_blocking_call_fails_it_with_the_cause(end, cause):
    with HostileServer(take_one_call(end)) as hostile:
        conn = syncpb.connect(hostile.address, timeout=WAIT)
        try:
            with pytest.raises(syncpb.ConnectionLost, match=cause):
                conn.root.add(1, 2)
            assert conn.closed
        finally:
            conn.close()
        hostile.join()


def test_a_close_from_another_thread_wakes_a_blocking_call():
    got = threading.Event()

    def hold(stream: Any) -> None:  # keep the connection open, never answer
        assert hostile.release.wait(WAIT)

    with HostileServer(take_one_call(hold, got)) as hostile:
        conn = syncpb.connect(hostile.address, timeout=WAIT)
        outcome: List[Any] = []

        def caller() -> None:
            try:
                outcome.append(conn.root.add(1, 2))
            except BaseException as exc:  # the test checks what it was
                outcome.append(exc)

        thread = threading.Thread(target=caller)
        thread.start()
        assert got.wait(WAIT)  # the call is out: the caller reads (or is about to)
        conn.close()
        thread.join(WAIT)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], syncpb.ConnectionLost), outcome


def test_a_write_after_a_reset_fails_the_call_with_the_cause():

    def reset_after_the_answer(stream: Any) -> None:
        stream.send(syncpb.banana.encode([b"answer", 1, 3]))
        reset(stream.sock)

    with HostileServer(take_one_call(reset_after_the_answer)) as hostile:
        conn = syncpb.connect(hostile.address, timeout=WAIT)
        try:
            assert conn.root.add(1, 2) == 3
            hostile.join()  # the reset is in: nothing can go out any more
            with pytest.raises(syncpb.ConnectionLost, match="failed: .*Connection reset"):
                conn.root.add(3, 4)  # (the write fails: no reader was running)
            assert conn.closed
        finally:
            conn.close()


# ---------------------------------------------------------------- server side

class Watcher(syncpb.Root):
    """Notes when a caller's connection ends (through a reference it passed)."""

    def __init__(self) -> None:
        self.lost = threading.Event()
        self.entered = threading.Event()
        self.go = threading.Event()

    def remote_watch(self, ref: Any) -> int:
        ref.notifyOnDisconnect(lambda _ref: self.lost.set())
        return 1

    def remote_add(self, a: int, b: int) -> int:
        return a + b

    def remote_after_go(self) -> int:
        """Answer once the test says so (blocks this server's hub meanwhile)."""
        self.entered.set()
        assert self.go.wait(WAIT)
        return 2


def watched_peer(address: str) -> RawPeer:
    """A raw client whose connection the server's root watches."""
    peer = RawPeer(address).handshake()
    answer = peer.call_and_read(b"watch", [b"remote", 1])
    assert answer == [b"answer", 1, 1], answer
    return peer


def assert_serving(address: str, before: Any) -> None:
    assert before.root.add(20, 22) == 42
    with syncpb.connect(address, timeout=WAIT) as after:
        assert after.root.add(1, 2) == 3


def test_a_client_reset_ends_only_its_connection(server_factory):
    root = Watcher()
    server, address = server_factory(root)
    with syncpb.connect(address, timeout=WAIT) as before:
        peer = watched_peer(address)
        assert peer.call_and_read(b"add", 2, 3) == [b"answer", 2, 5]
        reset(peer.sock)
        assert root.lost.wait(WAIT)
        assert_serving(address, before)


def test_an_answer_written_after_a_reset_ends_only_its_connection(server_factory):
    root = Watcher()
    server, address = server_factory(root)
    with syncpb.connect(address, timeout=WAIT) as before:
        peer = watched_peer(address)
        peer.call(b"after_go")
        assert root.entered.wait(WAIT)  # the call is read; its answer is not written yet
        reset(peer.sock)
        root.go.set()
        assert root.lost.wait(WAIT)
        assert_serving(address, before)


# ------------------------------------------------------- the descriptor itself

def test_the_compiled_core_reads_a_socket_s_descriptor_as_fileno_gives_it():
    """The compiled core reads a standard socket's descriptor from the
    object (a method call less per read and write); it must be what
    fileno() says, open, closed (-1) and for sockets of every family, and
    anything that is not a standard socket is asked through fileno()."""
    sockio = syncpb.speedups.load("_csockio")
    if sockio is None:
        pytest.skip("the compiled sessions' core is not in use (pure twin)")
    assert sockio.FD_FIELD is True  # (CPython's layout held when it was checked)
    pairs = [socket.socketpair(), socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)]
    listener = socket.create_server(("127.0.0.1", 0))
    for sock in [s for pair in pairs for s in pair] + [listener]:
        assert sockio.fileno_of(sock) == sock.fileno() >= 0
        sock.close()
        assert sockio.fileno_of(sock) == sock.fileno() == -1

    class Asked:
        def fileno(self) -> int:
            return 1234

    assert sockio.fileno_of(Asked()) == 1234
