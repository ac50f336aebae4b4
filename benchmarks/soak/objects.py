#!/usr/bin/env python3
"""Soak: references and cached copies passed and dropped leave nothing behind.

    .venv/bin/python benchmarks/soak/objects.py                # 100,000 calls
    .venv/bin/python benchmarks/soak/objects.py --calls 2000

A server (:mod:`soakserver`) runs in a child process; one client connection
in this process makes ``--calls`` calls, cycling through six kinds:

0. ``new_ref(i)``: the server returns a new Referenceable (the client keeps it
   for one call);
1. ``held.value()``: a call on that reference, which is then dropped
   (``decref`` to the server);
2. ``take_ref(mine, i)``: the client passes a Referenceable of its own, the
   server drops its proxy (``decref`` to the client);
3. ``shared_counter()``: the server's one Cacheable, observed again (a
   cached copy, kept for one call);
4. ``bump()``: the server changes it and notifies the observers, then the
   client drops its copy (``decache``/``uncache``, ``stoppedObserving``);
5. ``new_counter(i)``: a new Cacheable each call, dropped at once.

Afterwards both sides' tables must be back at their baseline: the server's
exports, imports, caches and cache imports, its live Referenceables and
Cacheables, the shared counter's observers, its greenlets; the client's
exports, imports and cache imports. Printed: those figures, wrong answers
and errors (must be 0), calls/s, and the server's (and client's) RSS at
0/25/50/75/100% of the calls.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (ServerProcess, load_average, mib, print_figures,  # noqa: E402
                    rss_kib)

import syncpb  # noqa: E402
import soakserver  # noqa: E402,F401  (registers RemoteSoakCounter for the copies)

#: Server figures that must come back to their baseline.
SERVER_TABLES = ("exports", "imports", "caches", "cache_imports", "live_refs",
                 "live_counters", "observers", "greenlets", "pending")
#: Longest wait for the releases to reach both sides after the last call.
SETTLE = 30.0


class Mine(syncpb.Referenceable):
    """The client's own object, passed to the server by reference."""

    def __init__(self, value: int) -> None:
        self.value = value

    def remote_value(self) -> int:
        return self.value


def client_tables(conn: syncpb.Connection) -> Dict[str, int]:
    """The client side's object tables."""
    broker = conn.broker
    return {"exports": broker.export_count, "imports": broker.import_count,
            "caches": broker.cache_count, "cache_imports": broker.cache_import_count}


def _one(root: Any, i: int, state: Dict[str, Any]) -> bool:
    """Call ``i`` (kind ``i % 6``); True when its answer is right."""
    kind = i % 6
    if kind == 0:
        state["held"] = root.new_ref(i)
        return isinstance(state["held"], syncpb.RemoteReference)
    if kind == 1:
        ref = state.pop("held", None)
        return ref is not None and ref.value() == i - 1
    if kind == 2:
        return root.take_ref(Mine(i), i) == i
    if kind == 3:
        state["counter"] = root.shared_counter()
        return isinstance(state["counter"], soakserver.RemoteSoakCounter)
    if kind == 4:
        bumped = root.bump()
        state.pop("counter", None)
        return isinstance(bumped, int) and bumped > 0
    fresh = root.new_counter(i)
    return isinstance(fresh, soakserver.RemoteSoakCounter) and fresh.value == i


def _settle(server: ServerProcess, conn: syncpb.Connection, baseline: Dict[str, Any],
            mine: Dict[str, int]) -> Dict[str, Any]:
    """Call ``stats`` until nothing on either side is above its baseline (each
    call carries the releases still queued) or :data:`SETTLE`; the last stats.
    (The server's greenlets may end below it: a reader handed off ends.)"""
    end = time.monotonic() + SETTLE
    while True:
        gc.collect()
        stats = server.stats(conn=conn)
        back = all(stats[k] <= baseline[k] for k in SERVER_TABLES) \
            and all(v <= mine[k] for k, v in client_tables(conn).items())
        if back or time.monotonic() >= end:
            return stats
        time.sleep(0.05)


def run(calls: int = 100_000, transport: str = "tcp") -> Dict[str, Any]:
    """The objects soak; returns its figures (see the module docstring)."""
    marks = {calls * q // 4 for q in range(5)}
    rss: Dict[str, List[int]] = {"server": [], "client": []}
    wrong = 0
    errors: Dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="soak") as workdir:
        server = ServerProcess(transport, workdir)
        try:
            with server.connect(call_timeout=60.0) as conn:
                root = conn.root
                for i in range(12):  # warm up every path once
                    _one(root, i, {})
                gc.collect()
                server.stats(conn=conn)  # carries the warm-up's releases
                baseline = server.stats(conn=conn)
                mine = client_tables(conn)
                state: Dict[str, Any] = {}
                started = time.perf_counter()
                for i in range(calls + 1):
                    if i in marks:
                        rss["server"].append(server.rss_kib())
                        rss["client"].append(rss_kib())
                    if i == calls:
                        break
                    try:
                        wrong += not _one(root, i, state)
                    except Exception as exc:  # counted, the loop goes on
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                seconds = time.perf_counter() - started
                state.clear()
                final = _settle(server, conn, baseline, mine)
                after = client_tables(conn)
        finally:
            server.stop()
    return {"calls": calls, "wrong": wrong, "errors": errors,
            "calls_per_s": calls / seconds, "baseline": baseline, "final": final,
            "client_baseline": mine, "client_final": after,
            "back": {k: (baseline[k], final[k]) for k in SERVER_TABLES},
            "leftover": {k: final[k] - baseline[k] for k in SERVER_TABLES
                         if final[k] > baseline[k]},
            "client_leftover": {k: after[k] - mine[k] for k in mine if after[k] > mine[k]},
            "rss_server_kib": rss["server"], "rss_client_kib": rss["client"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--transport", choices=["tcp", "unix", "tls"], default="tcp")
    options = parser.parse_args()
    print(f"load average at start: {load_average()}", flush=True)
    figures = run(options.calls, options.transport)
    marks = ("0%", "25%", "50%", "75%", "100%")
    print_figures(f"{options.calls:,} calls passing and dropping references and caches", {
        "wrong answers (must be 0)": figures["wrong"],
        "errors (must be none)": figures["errors"] or "none",
        "calls/s": f"{figures['calls_per_s']:,.0f}",
        "server tables (baseline, after)": figures["back"],
        "server left over (must be empty)": figures["leftover"] or "nothing",
        "client tables (baseline, after)": (figures["client_baseline"],
                                            figures["client_final"]),
        "client left over (must be empty)": figures["client_leftover"] or "nothing",
        "server threads (baseline, after)": (figures["baseline"]["threads"],
                                             figures["final"]["threads"]),
        "server RSS at " + "/".join(marks): " / ".join(
            mib(v) for v in figures["rss_server_kib"]),
        "client RSS at " + "/".join(marks): " / ".join(
            mib(v) for v in figures["rss_client_kib"]),
        "load average at end": load_average(),
    })


if __name__ == "__main__":
    main()
