"""Shared pieces of the benchmark peers: payloads, checks, timed loops and the
line protocol spoken with the driver (``benchmarks/run.py``).

Line protocol on a client's stdout / stdin:

* client -> driver ``READY``            connected and warmed up
* driver -> client ``GO``               start the measured phase now
* client -> driver ``RESULT {json}``    measured phase finished
* client -> driver ``ERROR {json}``     something failed (details on stderr)

A server prints one line ``ADDR <address>`` once it listens.

Every loop here is bounded twice: by a duration and by a call count.
"""

from __future__ import annotations

import json
import os
import random
import select
import string
import sys
import threading
import time
from dataclasses import dataclass

perf = time.perf_counter

HOST = "127.0.0.1"

#: W3 payload: 256 KiB of random bytes (Banana's per-string limit is 640 KiB).
BLOB_SIZE = 256 * 1024
#: W2 payload: 100 records.
N_RECORDS = 100
#: raw peer, W1/W4/W5/W6: size of the fixed small frame payload. 32 bytes is
#: what Twisted PB puts on the wire for ``callRemote("add", 12345, 1)``.
RAW_SMALL_SIZE = 32
#: raw peer, W2: size of the fixed payload standing in for the records list;
#: the Banana encoding of the W2 call is ~17.3 KB (msgpack of the list ~6.2 KB).
RAW_RECORDS_SIZE = 17_000

#: workloads and what a client does for each
WORKLOADS = {
    "W1": "sequential add(i, 1), one client",
    "W2": "sequential echo of 100 records, one client",
    "W3": "sequential echo of 256 KiB bytes, one client",
    "W4": "sequential add(i, 1) in each of N client processes at once",
    "W5": "add(i, 1) with N calls in flight on one connection",
    "W6": "add(i, 1) from N OS threads sharing one connection",
}


class BenchError(Exception):
    """A wrong answer or a protocol hiccup in the benchmark itself."""


@dataclass
class Options:
    seconds: float = 2.0      # measured phase duration bound
    warmup: float = 0.3       # warm-up duration bound
    max_count: int = 5_000_000  # measured phase call-count bound
    warmup_max: int = 20_000  # warm-up call-count bound
    inflight: int = 64        # W5 window
    threads: int = 16         # W6 threads
    timeout: float = 30.0     # per-call / per-phase safety timeout
    pyro5_w5: str = "batch"   # "batch" (BatchProxy) or "threads"


# ---------------------------------------------------------------- payloads

def make_records(seed: int = 1):
    """The W2 payload: 100 dicts {id, name(12 chars), score, tags[3 x 5]}."""
    rng = random.Random(seed)
    letters = string.ascii_letters

    def s(n):
        return "".join(rng.choice(letters) for _ in range(n))

    return [
        {"id": i, "name": s(12), "score": rng.random() * 1000.0,
         "tags": [s(5), s(5), s(5)]}
        for i in range(N_RECORDS)
    ]


def make_blob(seed: int = 3, size: int = BLOB_SIZE) -> bytes:
    """The W3 payload: ``size`` random bytes."""
    return random.Random(seed).randbytes(size)


def normalize(x):
    """Compare echoes modulo list/tuple (msgpack and jelly differ there)."""
    if isinstance(x, (list, tuple)):
        return [normalize(v) for v in x]
    if isinstance(x, dict):
        return {k: normalize(v) for k, v in x.items()}
    return x


def check_add(i, r):
    if r != i + 1:
        raise BenchError(f"add({i}, 1) returned {r!r}")


def check_echo(sent, got, full: bool):
    """Full comparison during warm-up; a cheap length check when measuring."""
    if full:
        if normalize(got) != normalize(sent):
            raise BenchError(f"echo mismatch: got {type(got).__name__} "
                             f"of len {len(got) if hasattr(got, '__len__') else '?'}")
    elif len(got) != len(sent):
        raise BenchError(f"echo length mismatch: {len(got)} != {len(sent)}")


# ---------------------------------------------------------------- driver I/O

def announce(addr: str) -> None:
    """Server side: tell the driver where we listen."""
    sys.stdout.write(f"ADDR {addr}\n")
    sys.stdout.flush()


def ready_go(timeout: float = 300.0) -> None:
    """Client side: report READY, then block until the driver says GO."""
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    deadline = time.monotonic() + timeout
    buf = b""
    fd = sys.stdin.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError("no GO from the driver in time")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 64)
        if not chunk:
            raise BenchError("driver closed stdin before GO")
        buf += chunk
        if b"\n" in buf:
            if buf.split(b"\n", 1)[0].strip() != b"GO":
                raise BenchError(f"unexpected driver line {buf!r}")
            return


def result(calls: int, elapsed: float, mode: str, bytes_per_call: int = 0,
           **extra) -> dict:
    d = {"calls": calls, "elapsed": elapsed, "mode": mode,
         "bytes_per_call": bytes_per_call}
    d.update(extra)
    return d


def emit(tag: str, payload: dict) -> None:
    sys.stdout.write(f"{tag} {json.dumps(payload)}\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- timed loops

def sequential(step, seconds: float, max_count: int):
    """Call ``step(i)`` for i = 0, 1, ... until ``seconds`` or ``max_count``.

    Returns (calls, elapsed).
    """
    n = 0
    t0 = perf()
    end = t0 + seconds
    while n < max_count:
        step(n)
        n += 1
        if perf() >= end:
            break
    return n, perf() - t0


def warm_then_measure(loop, opts: Options):
    """``loop(seconds, max_count, verify) -> (calls, elapsed)``: run it once
    as warm-up (verifying answers fully), synchronise with the driver, then
    run it again as the measured phase."""
    loop(opts.warmup, opts.warmup_max, True)
    ready_go()
    return loop(opts.seconds, opts.max_count, False)


class ThreadGroup:
    """N persistent OS threads that run timed phases together.

    ``make_step(t)`` runs *in* thread t (so per-thread resources such as
    Pyro5 proxies are owned by it) and returns ``step(i)``; each phase every
    thread calls ``step(i)`` until the phase's duration or its share of the
    count bound is reached. Threads are daemons: a hung call cannot keep the
    process alive past the driver's timeouts.
    """

    def __init__(self, n: int, make_step, timeout: float):
        self.n = n
        self.timeout = timeout
        self.make_step = make_step
        self.counts = [0] * n
        self.errors = []
        self.stop = False
        self.seconds = 0.0
        self.per_thread_max = 0
        self.start_b = threading.Barrier(n + 1)
        self.end_b = threading.Barrier(n + 1)
        self.threads = [threading.Thread(target=self._worker, args=(t,),
                                         daemon=True, name=f"bench-{t}")
                        for t in range(n)]
        for th in self.threads:
            th.start()

    @classmethod
    def measure(cls, n: int, make_step, opts: Options):
        """Start ``n`` threads, warm up, synchronise with the driver, run the
        measured phase and stop the threads; return ``(calls, elapsed)``."""
        group = cls(n, make_step, opts.timeout)
        try:
            group.run_phase(opts.warmup, opts.warmup_max)
            ready_go()
            return group.run_phase(opts.seconds, opts.max_count)
        finally:
            group.close()

    def _worker(self, t):
        try:
            step = self.make_step(t)
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            self.errors.append(e)
            step = None
        while True:
            try:
                self.start_b.wait(self.timeout)
            except threading.BrokenBarrierError:
                return
            if self.stop:
                return
            n = 0
            if step is not None and not self.errors:
                end = perf() + self.seconds
                cap = self.per_thread_max
                try:
                    while n < cap:
                        step(n)
                        n += 1
                        if perf() >= end:
                            break
                except BaseException as e:  # noqa: BLE001
                    self.errors.append(e)
            self.counts[t] = n
            try:
                self.end_b.wait(self.timeout + self.seconds)
            except threading.BrokenBarrierError:
                return

    def run_phase(self, seconds: float, max_count: int):
        self.seconds = seconds
        self.per_thread_max = max(1, max_count // self.n)
        self.start_b.wait(self.timeout)
        t0 = perf()
        self.end_b.wait(self.timeout + seconds)
        elapsed = perf() - t0
        if self.errors:
            raise BenchError(f"thread failed: {self.errors[0]!r}") from self.errors[0]
        return sum(self.counts), elapsed

    def close(self):
        self.stop = True
        try:
            self.start_b.wait(1.0)
        except threading.BrokenBarrierError:
            pass
