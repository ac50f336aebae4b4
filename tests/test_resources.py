"""Connecting and closing many times leaks no file descriptors or threads."""

from __future__ import annotations

import os
import threading

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


def test_connect_close_cycles_leak_nothing(server_factory):
    server, address = server_factory(Root())
    one_cycle(address)  # warm up lazily created module state
    fds, threads = open_fds(), threading.active_count()
    for _ in range(50):
        one_cycle(address)
    assert open_fds() <= fds
    assert threading.active_count() <= threads
