"""Spread calculations over several calculator servers.

Two styles over the same connections:

* blocking: ``conn.root.calculate(a, b)`` waits and returns the answer;
* callback-style: ``conn.root.callRemote("calculate", a, b)`` returns a
  Deferred at once, so many calls are in flight; ``syncpb.gather`` collects
  them.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any, List, Sequence, Tuple

import syncpb

Task = Tuple[int, int]


def tasks(count: int) -> List[Task]:
    """The pairs to add: (0, 1), (1, 2), ..."""
    return [(i, i + 1) for i in range(count)]


def blocking_total(connections: Sequence[syncpb.Connection], work: Sequence[Task]) -> int:
    """Add each pair on the next server in turn, one call at a time."""
    servers = itertools.cycle(connections)
    return sum(next(servers).root.calculate(a, b) for a, b in work)


def callback_total(connections: Sequence[syncpb.Connection], work: Sequence[Task]) -> int:
    """Send every call at once, then gather the answers."""
    servers = itertools.cycle(connections)
    calls = [next(servers).root.callRemote("calculate", a, b) for a, b in work]
    for d in calls:
        d.addCallback(lambda answer: answer * 1)  # a place for per-answer work
    return sum(syncpb.gather(calls).result(timeout=30))


def connect(address: str, tls: Any = None) -> syncpb.Connection:
    """Connect; a ``tls://`` or ``tls+unix://`` address uses ``tls``."""
    secure = address.startswith(("tls://", "tls+unix://"))
    return syncpb.connect(address, timeout=10, tls=tls if secure else None)


def main(addresses: Sequence[str], count: int = 1000, tls: Any = None) -> None:
    """Spread ``count`` additions over the servers at ``addresses``
    (``tls``: the :func:`syncpb.tls.client_context` for TLS ones)."""
    connections = [connect(address, tls) for address in addresses]
    try:
        for address, conn in zip(addresses, connections):
            print(f"connected to {conn.root.whoami()} over {address.split(':', 1)[0]}")
        work = tasks(count)
        expected = sum(a + b for a, b in work)
        total = blocking_total(connections, work)
        print(f"blocking calls:       total of {count} additions = {total}")
        total_cb = callback_total(connections, work)
        print(f"callback-style calls: total of {count} additions = {total_cb}")
        assert total == total_cb == expected, (total, total_cb, expected)
        try:
            connections[0].root.calculate(1, 0, "/")
        except syncpb.Error as exc:
            print("a remote error comes back as an exception:", exc)
        print("calculations per server:", [conn.root.stats() for conn in connections])
    finally:
        for conn in connections:
            conn.close()


if __name__ == "__main__":
    main(sys.argv[1:])
