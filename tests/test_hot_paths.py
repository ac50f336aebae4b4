"""Structural guards for the per-call hot paths (no timing here: see benchmarks/).

CPython 3.11 specialises instance-attribute reads on objects whose
``__dict__`` keys are shared with their class's other instances; past 30
keys the dict stops sharing and every ``self.x`` on the hot path takes a
slower lookup (measured: +4k instructions per W1 call on the client when
the Broker grew to 36 attributes). The broker uses ``__slots__``; the
sessions must stay under the limit.
"""

from __future__ import annotations

import syncpb

SHARED_KEYS_LIMIT = 30


class Root(syncpb.Root):
    def remote_sizes(self):
        return None


def test_broker_has_no_instance_dict(server_factory, connect):
    _, address = server_factory(Root())
    conn = connect(address)
    assert not hasattr(conn.broker, "__dict__")


def test_sessions_stay_within_shared_key_dicts(server_factory, connect):
    server, address = server_factory(Root())
    conn = connect(address)
    conn.root.sizes()
    assert len(vars(conn._session)) <= SHARED_KEYS_LIMIT
    (green,) = server._sessions
    assert len(vars(green)) <= SHARED_KEYS_LIMIT
