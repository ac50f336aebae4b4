"""Connecting and closing many times leaks no file descriptors or threads."""

from __future__ import annotations

import os
import threading
import time

import syncpb


class Root(syncpb.Root):
    def remote_add(self, a, b):
        return a + b

    def remote_call_me(self, ref):
        return ref.callRemote("ping").result(timeout=10)


class Pingable(syncpb.Referenceable):
    def remote_ping(self):
        return "pong"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def one_cycle(address: str) -> None:
    conn = syncpb.connect(address, timeout=5)
    assert conn.root.add(1, 2) == 3
    assert conn.root.call_me(Pingable()) == "pong"  # starts a dispatcher thread too
    session = conn._session
    conn.close()
    assert session._background.join(10)  # the background reader ended...
    for thread in session._dispatcher.threads:  # ...and so did the dispatcher
        thread.join(10)
        assert not thread.is_alive()


def server_side_closed(server, fds: int, timeout: float = 10.0) -> bool:
    """The server (in this process, in its hub thread) closes its side of
    the last connection a moment after the client closed: wait until it has
    (the connection is forgotten and the descriptor count is back) or the
    timeout passes. Not a timing assumption: it checks the condition."""
    deadline = time.monotonic() + timeout
    ticker = threading.Event()
    while server.connection_count or open_fds() > fds:
        if time.monotonic() > deadline:
            return False
        ticker.wait(0.01)
    return True


def test_connect_close_cycles_leak_nothing(server_factory):
    server, address = server_factory(Root())
    one_cycle(address)  # warm up lazily created module state
    assert server_side_closed(server, fds=1 << 30)  # the warm-up connection is gone
    fds, threads = open_fds(), threading.active_count()
    for _ in range(50):
        one_cycle(address)
    assert server_side_closed(server, fds), (open_fds(), fds, server.connection_count)
    assert open_fds() <= fds
    assert threading.active_count() <= threads
