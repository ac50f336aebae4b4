"""What does a message cost when it arrives in TCP-segment-sized pieces?

A benchmark script, not a test. On loopback a message usually arrives in
one read; on a real network it arrives in segments of at most 1,460 bytes
(an Ethernet MSS), and a receiver faster than the link reads them one at a
time. This script times syncpb's server broker receiving one call message
(``Broker.receive_data``: framing, Banana, Jelly and the call event, the
full sans-IO path) fed whole and fed in ``--segment``-byte pieces, for:

* ``W2``: the call of benchmarks/run.py's W2, ``echo(records)`` with 100
  small dicts with text keys (about 17 KB);
* ``600 KiB records``: the same kind of records, about 3,500 of them, in one
  call message of 600 KiB (many small tokens: the shape where re-scanning
  or copying on partial input would show);
* ``600 KiB bytes``: one 600 KiB byte string (almost no tokens: what is
  left is the fixed cost of each piece and of assembling the string).

It prints microseconds per message (the median of ``--runs`` runs, whole
and pieces interleaved, each on a fresh broker) and the ratio pieces/whole.
Two more columns read the same pieces from a stand-in for a socket's
``recv_into`` (each read copies ``--segment`` bytes, as the kernel would)
the two ways a session can: the plain way (each piece read into a reused
buffer, copied out and fed to ``receive_data``) and, as a session does once
a connection has shown split delivery, straight into the broker's buffer
(``Broker.message_buffer().fill``, then ``receive_buffered`` once).
It takes a few seconds.
The issue's bound is 1.5x for the 600 KiB message. Which codec runs is
printed: the compiled modules when built, the pure-Python ones under
``SYNCPB_PURE=1``; run it both ways:

    python benchmarks/split_delivery.py [--segment 1460] [--runs 100]
    SYNCPB_PURE=1 python benchmarks/split_delivery.py
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from peers.common import make_records  # noqa: E402

from syncpb import speedups  # noqa: E402
from syncpb.broker import Broker, CallReceived  # noqa: E402
from syncpb.flavors import Root  # noqa: E402

#: the compiled modules a run may use (each falls back to its Python twin)
COMPILED = ("_cframer", "_creader", "_cwriter")


class Echo(Root):
    def remote_echo(self, value: Any) -> Any:
        return value


def ready_pair() -> Tuple[Broker, Broker]:
    """A server and a client broker that have finished the handshake."""
    server, client = Broker(root=Echo()), Broker(is_client=True)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.data_to_send()
    server.data_to_send()
    return server, client


def call_message(value: Any) -> bytes:
    """The bytes of an ``echo(value)`` call, as the client sends them."""
    _, client = ready_pair()
    client.call(b"root", "echo", (value,))
    return client.data_to_send()


def records_of_size(size: int) -> List[Dict[str, Any]]:
    """W2's records (100 per batch, new seeds) until the call is ``size`` bytes."""
    records: List[Dict[str, Any]] = []
    batch = make_records()
    per_record = len(call_message(batch)) / len(batch)
    seed = 1
    while len(records) * per_record < size:
        records += make_records(seed)
        seed += 1
    records = records[:max(1, int(size / per_record))]
    while len(call_message(records)) > size and len(records) > 1:
        records.pop()
    return records


def messages() -> List[Tuple[str, bytes]]:
    size = 600 * 1024
    blob = call_message(b"")
    return [
        ("W2 (100 small dicts)", call_message(make_records())),
        ("600 KiB records", call_message(records_of_size(size))),
        ("600 KiB bytes", call_message(os.urandom(size - len(blob) - 3))),
    ]


def feed_once(pieces: List[bytes]) -> float:
    """Seconds a fresh server broker takes to receive ``pieces`` (one call)."""
    server, _ = ready_pair()
    receive = server.receive_data
    events: List[Any] = []
    start = time.perf_counter()
    for piece in pieces:
        events += receive(piece)
    elapsed = time.perf_counter() - start
    if len(events) != 1 or not isinstance(events[0], CallReceived):
        raise SystemExit(f"expected one call, got {events!r:.300}")
    return elapsed


class Pieces:
    """A stand-in for a socket's ``recv_into`` handing out ``message`` in
    reads of at most ``segment`` bytes."""

    def __init__(self, message: bytes, segment: int) -> None:
        self.data, self.pos, self.segment = memoryview(message), 0, segment

    def recv_into(self, view: memoryview, nbytes: int = 0, flags: int = 0) -> int:
        count = min(len(view), self.segment, len(self.data) - self.pos)
        view[:count] = self.data[self.pos:self.pos + count]
        self.pos += count
        return count


def read_once(message: bytes, segment: int) -> float:
    """Seconds a fresh server broker takes to receive ``message`` read the
    plain way in ``segment``-byte reads (into a reused buffer, copied out)."""
    server, _ = ready_pair()
    receive = server.receive_data
    source = Pieces(message, segment)
    area = bytearray(segment)
    view = memoryview(area)
    events: List[Any] = []
    start = time.perf_counter()
    while source.pos < len(message):
        events += receive(view[:source.recv_into(area)].tobytes())
    elapsed = time.perf_counter() - start
    if len(events) != 1 or not isinstance(events[0], CallReceived):
        raise SystemExit(f"expected one call, got {events!r:.300}")
    return elapsed


def fill_once(message: bytes, segment: int) -> float:
    """Seconds a fresh server broker, its messages coming in pieces, takes
    to receive ``message`` read as a session reads it: into the broker's
    buffer, then (should it outgrow the buffer) the plain way."""
    server, _ = ready_pair()
    server.assemble = True  # as after a message that came in pieces
    source = Pieces(message, segment)
    area = bytearray(segment)
    view = memoryview(area)
    events: List[Any] = []
    start = time.perf_counter()
    while not events:
        if server.assemble:
            if server.message_buffer().fill(source.recv_into, segment, 0, 0):
                events += server.receive_buffered()
        else:
            events += server.receive_data(view[:source.recv_into(area)].tobytes())
    elapsed = time.perf_counter() - start
    if len(events) != 1 or not isinstance(events[0], CallReceived):
        raise SystemExit(f"expected one call, got {events!r:.300}")
    return elapsed


def measure(message: bytes, segment: int, runs: int) -> List[float]:
    """Median microseconds per message: whole, in ``segment``-byte pieces,
    read in such pieces the plain way, read into the broker's buffer.

    The two ways alternate (and swap order each run) so that drift in the
    machine's speed hits both alike; two runs of each warm up first. The
    garbage collector is off meanwhile (collected before): a collection
    lands in one way's runs only and empties the CPU caches."""
    ways = {"whole": [message],
            "pieces": [message[i:i + segment] for i in range(0, len(message), segment)]}
    times: Dict[str, List[float]] = {"whole": [], "pieces": [], "reads": [], "buffer": []}
    names = tuple(times)
    readers = {"reads": read_once, "buffer": fill_once}
    gc.collect()
    gc.disable()  # no collection in the middle of one way only
    try:
        for run in range(runs + 2):
            for name in (names if run % 2 else names[::-1]):
                elapsed = (readers[name](message, segment) if name in readers
                           else feed_once(ways[name]))
                if run >= 2:
                    times[name].append(elapsed)
    finally:
        gc.enable()
    return [statistics.median(times[name]) * 1e6 for name in names]


def codec_line() -> str:
    if speedups.pure_forced():
        return "pure Python (SYNCPB_PURE=1)"
    built = [name for name in COMPILED if speedups.load(name) is not None]
    if not built:
        return "pure Python (no compiled module built)"
    return "compiled: " + ", ".join(built) + (
        "; pure: " + ", ".join(n for n in COMPILED if n not in built)
        if len(built) < len(COMPILED) else "")


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--segment", type=int, default=1460,
                        help="bytes per piece (default 1460, an Ethernet MSS)")
    parser.add_argument("--runs", type=int, default=100,
                        help="runs per message of W2's size, a quarter of that for the "
                             "600 KiB ones; the median is shown (default 100)")
    options = parser.parse_args(argv)
    print(f"Receiving one call message whole and in {options.segment:,}-byte pieces "
          f"(syncpb server Broker.receive_data), µs per message, median of "
          f"{options.runs} runs ({max(5, options.runs // 4)} for 600 KiB)")
    print(f"Codec: {codec_line()}\n")
    print("| message | bytes | pieces | whole µs | pieces µs | pieces/whole "
          "| reads: plain µs | into the buffer µs | buffer/plain |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, message in messages():
        runs = options.runs if len(message) < 100_000 else max(5, options.runs // 4)
        whole, split, plain, buffer = measure(message, options.segment, runs)
        count = -(-len(message) // options.segment)
        print(f"| {name} | {len(message):,} | {count:,} | {whole:,.0f} | {split:,.0f} "
              f"| {split / whole:.2f}x | {plain:,.0f} | {buffer:,.0f} "
              f"| {buffer / plain:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
