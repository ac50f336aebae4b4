"""connect(call_timeout=...) bounds blocking proxy calls, not Deferreds."""

from __future__ import annotations

import pytest

import syncpb


class Gate(syncpb.Root):
    """``wait()`` answers only after ``open()`` was called (from another call)."""

    def __init__(self):
        self.gate = None

    def remote_wait(self):
        import gevent.event
        self.gate = gevent.event.Event()
        self.gate.wait()
        return "opened"

    def remote_open(self):
        self.gate.set()
        return True

    def remote_ping(self):
        return "pong"


@pytest.fixture
def gated(server_factory):
    root = Gate()
    server, address = server_factory(root)
    return root, address


def test_blocking_call_times_out_and_connection_stays_usable(gated):
    root, address = gated
    with syncpb.connect(address, timeout=5, call_timeout=0.3) as conn:
        with pytest.raises(syncpb.CallTimeout):
            conn.root.wait()  # cannot answer before open() is called
        assert conn.root.ping() == "pong"
        assert conn.root.open() is True
        assert not conn.closed


def test_explicit_timeout_overrides_and_deferreds_are_unaffected(gated):
    root, address = gated
    with syncpb.connect(address, timeout=5, call_timeout=0.2) as conn:
        d = conn.root.callRemote("wait")                    # no call_timeout here
        assert conn.root.call("ping", timeout=5) == "pong"  # an explicit timeout wins
        assert conn.root.open() is True
        assert d.result(timeout=10) == "opened"
