#!/usr/bin/env python3
"""How soon callers blocked in a call learn that the server was SIGKILLed.

    .venv/bin/python benchmarks/soak/kill_latency.py                  # tcp, unix, tls; 5 rounds
    .venv/bin/python benchmarks/soak/kill_latency.py --transports tls --rounds 2

Each round starts a server (:mod:`soakserver`) in a child process, has
``--threads`` OS threads and ``--greenlets`` greenlets (all in one gevent
hub, in a thread of its own) each block in ``root.block()`` (a method that
waits for an event that never fires), over one shared connection or each
over its own, waits until the server counts them all, then SIGKILLs the
server's PID. Every caller must get ``syncpb.ConnectionLost`` (its call
timeout, ``--call-timeout``, is far longer, so a CallTimeout is a failure).
Printed per transport and connection layout: the outcomes, and the time
from the kill to each caller's ConnectionLost (median and max).

:func:`kill_round` is also what ``tests/test_faults.py`` runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ServerProcess, load_average, make_certs  # noqa: E402

import syncpb  # noqa: E402

#: Longest wait for the callers to be blocked in the server.
BLOCK_WAIT = 15.0
#: Longest wait, after the kill, for every caller's outcome.
WAIT = 30.0


@dataclass
class Outcome:
    """How one caller's call ended."""

    kind: str           #: "thread" or "greenlet"
    error: str          #: the exception's type name ("" if the call returned)
    latency: float      #: seconds from the SIGKILL to the exception (nan if none)


def _call(kind: str, conn: syncpb.Connection, call_timeout: float, out: List[Outcome],
          lock: threading.Lock) -> None:
    try:
        conn.root.call("block", timeout=call_timeout)
    except Exception as exc:  # the outcome is the point
        outcome = Outcome(kind, type(exc).__name__, time.perf_counter())
    else:
        outcome = Outcome(kind, "", float("nan"))
    with lock:
        out.append(outcome)


def _greenlet_hub(conns: List[syncpb.Connection], call_timeout: float, out: List[Outcome],
                  lock: threading.Lock) -> None:
    """Run one greenlet per connection in this thread's own gevent hub."""
    import gevent
    gevent.joinall([gevent.spawn(_call, "greenlet", conn, call_timeout, out, lock)
                    for conn in conns])


def kill_round(transport: str, workdir: str, certdir: Optional[str] = None, threads: int = 8,
               greenlets: int = 8, shared: bool = True,
               call_timeout: float = 30.0) -> Dict[str, Any]:
    """One round: callers block, the server is SIGKILLed; returns
    ``{"blocked": n, "outcomes": [Outcome...], "pending": callers that had
    not finished after WAIT s}`` with latencies relative to the kill."""
    server = ServerProcess(transport, workdir, certdir)
    callers = threads + greenlets
    conns: List[syncpb.Connection] = []
    out: List[Outcome] = []
    lock = threading.Lock()
    try:
        control = server.connect()
        conns = [server.connect()] if shared else [server.connect() for _ in range(callers)]
        per_caller = [conns[0]] * callers if shared else conns
        running = [threading.Thread(target=_call, daemon=True,
                                    args=("thread", per_caller[i], call_timeout, out, lock))
                   for i in range(threads)]
        running.append(threading.Thread(target=_greenlet_hub, daemon=True,
                                        args=(per_caller[threads:], call_timeout, out, lock)))
        for thread in running:
            thread.start()
        blocked = control.root.call("wait_blocked", callers, BLOCK_WAIT,
                                    timeout=BLOCK_WAIT + 5)
        killed_at = time.perf_counter()
        os.kill(server.pid, signal.SIGKILL)
        end = time.monotonic() + WAIT
        for thread in running:
            thread.join(max(0.0, end - time.monotonic()))
        pending = callers - len(out)
        control.close()
    finally:
        server.kill()
        for conn in conns:
            conn.close()
    for outcome in out:
        outcome.latency -= killed_at
    return {"blocked": blocked, "outcomes": out, "pending": pending}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transports", default="tcp,unix,tls")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--greenlets", type=int, default=8)
    parser.add_argument("--call-timeout", type=float, default=30.0)
    options = parser.parse_args()
    print(f"load average at start: {load_average()}", flush=True)
    print("| transport | connections | rounds | callers | ConnectionLost | other outcomes "
          "| median ms | max ms |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="soak") as workdir:
        certdir = make_certs(os.path.join(workdir, "certs"))
        for transport in options.transports.split(","):
            for shared in (True, False):
                outcomes: List[Outcome] = []
                others: Dict[str, int] = {}
                for _ in range(options.rounds):
                    result = kill_round(transport, workdir, certdir, options.threads,
                                        options.greenlets, shared, options.call_timeout)
                    outcomes += result["outcomes"]
                    if result["pending"]:
                        others["no outcome"] = others.get("no outcome", 0) + result["pending"]
                lost = [o.latency * 1000 for o in outcomes if o.error == "ConnectionLost"]
                for o in outcomes:
                    if o.error != "ConnectionLost":
                        others[o.error or "returned"] = others.get(o.error or "returned", 0) + 1
                callers = options.rounds * (options.threads + options.greenlets)
                print(f"| {transport} | {'one shared' if shared else 'one each'} "
                      f"| {options.rounds} | {callers} | {len(lost)} | {others or 'none'} "
                      f"| {statistics.median(lost) if lost else float('nan'):.1f} "
                      f"| {max(lost) if lost else float('nan'):.1f} |", flush=True)
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
