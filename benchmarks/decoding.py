"""Is decoding linear in the input size, whole and byte by byte?

A benchmark script, not a test. For messages of growing size made of small
items (lists of short byte strings, the shape that makes a naive incremental
decoder quadratic) it times:

* syncpb's broker receiving one call message, fed whole and fed one byte at
  a time (the full path: framing, Banana, Jelly, the call event);
* Twisted's Banana decoder (``twisted.spread.banana.Banana.dataReceived``),
  the anchor, fed the same bytes the same two ways, in the same run.

It prints nanoseconds per input byte for each size; linear decoding keeps
that figure flat as the size grows. Twisted's byte-at-a-time figures are
only measured up to a size where one run stays within ``--budget`` seconds.

    python benchmarks/decoding.py [--sizes 65536,262144,1048576] [--budget 20]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, List, Optional

from syncpb.broker import Broker, CallReceived
from syncpb.flavors import Root


class Sink(Root):
    def remote_take(self, value):
        return len(value)


def call_message(size: int) -> bytes:
    """A ``take([[b'item0', ...], ...])`` call message of about ``size`` bytes."""
    server, client = Broker(root=Sink()), Broker(is_client=True)
    client.receive_data(server.data_to_send())
    client.data_to_send()
    rows = max(1, size // (1000 * 8))
    value = [[b"item%03d" % (i % 1000) for i in range(1000)] for _ in range(rows)]
    client.call(b"root", "take", (value,))
    return client.data_to_send()


def fresh_server() -> Broker:
    server, client = Broker(root=Sink()), Broker(is_client=True)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return server


def syncpb_feed(data: bytes, step: Optional[int]) -> float:
    server = fresh_server()
    start = time.perf_counter()
    if step is None:
        events = server.receive_data(data)
    else:
        events = []
        for i in range(0, len(data), step):
            events += server.receive_data(data[i:i + step])
    elapsed = time.perf_counter() - start
    assert len(events) == 1 and isinstance(events[0], CallReceived), events
    return elapsed


def twisted_feed(data: bytes, step: Optional[int]) -> float:
    from twisted.spread import banana as tbanana

    received: List[object] = []

    class Collector(tbanana.Banana):
        def expressionReceived(self, expression):  # noqa: N802 - Twisted's name
            received.append(expression)

    decoder = Collector(isClient=0)
    decoder.makeConnection(_NullTransport())
    decoder.currentDialect = b"pb"  # as if the handshake had chosen it
    start = time.perf_counter()
    if step is None:
        decoder.dataReceived(data)
    else:
        for i in range(0, len(data), step):
            decoder.dataReceived(data[i:i + step])
    elapsed = time.perf_counter() - start
    assert len(received) == 1
    return elapsed


class _NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def loseConnection(self) -> None:  # noqa: N802
        pass


def measure(feed: Callable[[bytes, Optional[int]], float], data: bytes,
            step: Optional[int], repeat: int) -> float:
    """Best of ``repeat`` runs, in nanoseconds per input byte."""
    return min(feed(data, step) for _ in range(repeat)) / len(data) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="65536,262144,1048576")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="seconds one Twisted byte-at-a-time run may take")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    rows: Dict[int, Dict[str, str]] = {}
    twisted_bytewise_ok = True
    warm_up = call_message(sizes[0])  # first use of the code paths is not what we measure
    syncpb_feed(warm_up, None)
    syncpb_feed(warm_up, 1)
    for size in sizes:
        data = call_message(size)
        row = rows[len(data)] = {}
        row["syncpb whole"] = f"{measure(syncpb_feed, data, None, 5):.0f}"
        row["syncpb 1-byte"] = f"{measure(syncpb_feed, data, 1, 1):.0f}"
        try:
            row["twisted whole"] = f"{measure(twisted_feed, data, None, 3):.0f}"
            if twisted_bytewise_ok:
                start = time.perf_counter()
                value = measure(twisted_feed, data, 1, 1)
                row["twisted 1-byte"] = f"{value:.0f}"
                twisted_bytewise_ok = time.perf_counter() - start < options.budget / 4
            else:
                row["twisted 1-byte"] = "skipped (over budget)"
        except ImportError:
            row["twisted whole"] = row["twisted 1-byte"] = "n/a (Twisted not installed)"
    columns = ["syncpb whole", "syncpb 1-byte", "twisted whole", "twisted 1-byte"]
    print("Decoding one call message of small items, nanoseconds per input byte")
    print("(flat down a column = linear in the input size)\n")
    print("| message bytes | " + " | ".join(columns) + " |")
    print("|---:|" + "---:|" * len(columns))
    for size, row in rows.items():
        print(f"| {size:,} | " + " | ".join(row[c] for c in columns) + " |")


if __name__ == "__main__":
    main()
