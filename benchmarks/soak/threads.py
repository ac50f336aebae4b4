#!/usr/bin/env python3
"""Soak: many OS threads share one connection, with callbacks mid-call.

    .venv/bin/python benchmarks/soak/threads.py                     # 16 threads, 60 s
    .venv/bin/python benchmarks/soak/threads.py --calls-per-thread 300

A server (:mod:`soakserver`) runs in a child process. ``--threads`` OS
threads share one ``syncpb.connect`` connection and call as fast as they
can: ``echo(token, payload)``, and every ``--callback-every`` calls
``call_back(pinger, token)``, where the server calls ``pinger.ping(token)``
(the thread's own Referenceable) and waits for it before answering. The run
ends after ``--seconds`` or, if given, ``--calls-per-thread`` calls each.

A watchdog thread checks each thread's progress every 0.5 s: one that made
no call for ``--stall`` seconds is a stall (a deadlock) and fails the run;
calls then time out (``--stall`` + 10 s) so that the run still ends.
Printed: calls/s, callbacks made and received, wrong answers, errors and
stalls (the last three must be 0).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (ServerProcess, load_average, make_payload, mib,  # noqa: E402
                    print_figures)

import syncpb  # noqa: E402


class Pinger(syncpb.Referenceable):
    """One thread's callback object: counts the server's calls into it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pings = 0
        self.lock = threading.Lock()

    def remote_ping(self, token: str) -> str:
        with self.lock:  # dispatcher threads (more than one when a call waits)
            self.pings += 1
        return f"pong:{token}"


class _Worker:
    """One calling thread and its counts."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pinger = Pinger(index)
        self.calls = self.callbacks = self.wrong = 0
        self.errors: Dict[str, int] = {}
        self.last_progress = time.monotonic()

    def run(self, root: Any, stop: threading.Event, limit: Optional[int], every: int,
            timeout: float) -> None:
        rng = random.Random(self.index)
        number = 0
        while not stop.is_set() and (limit is None or number < limit):
            number += 1
            token = f"{self.index}.{number}"
            try:
                if number % every == 0:
                    answer = root.call("call_back", self.pinger, token, timeout=timeout)
                    right = answer == ("cb", token, f"pong:{token}")
                    self.callbacks += 1
                else:
                    payload = make_payload(rng, number % 5)  # the small kinds
                    answer = root.call("echo", token, payload, timeout=timeout)
                    right = answer == (token, payload)
            except Exception as exc:  # counted: must not happen
                name = type(exc).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
            else:
                self.wrong += not right
            self.calls += 1
            self.last_progress = time.monotonic()


def run(threads: int = 16, seconds: float = 60.0, calls_per_thread: Optional[int] = None,
        callback_every: int = 100, stall: float = 20.0,
        transport: str = "tcp") -> Dict[str, Any]:
    """The threads soak; returns its figures (see the module docstring)."""
    workers = [_Worker(i) for i in range(threads)]
    stop = threading.Event()
    stalls: List[str] = []
    with tempfile.TemporaryDirectory(prefix="soak") as workdir:
        server = ServerProcess(transport, workdir)
        try:
            with server.connect() as conn:
                finished = threading.Event()
                left = [threads]
                count_lock = threading.Lock()

                def work(worker: _Worker) -> None:
                    try:
                        worker.run(conn.root, stop, calls_per_thread, callback_every,
                                   stall + 10.0)
                    finally:
                        with count_lock:
                            left[0] -= 1
                            if not left[0]:
                                finished.set()

                running = [threading.Thread(target=work, args=(w,), daemon=True,
                                            name=f"soak-{w.index}") for w in workers]
                started = time.monotonic()
                for worker in workers:
                    worker.last_progress = started
                for thread in running:
                    thread.start()
                end = started + seconds if calls_per_thread is None else started + 3600
                while not finished.is_set():
                    now = time.monotonic()
                    for worker, thread in zip(workers, running):
                        if thread.is_alive() and now - worker.last_progress > stall:
                            stalls.append(f"thread {worker.index}: no call for "
                                          f"{now - worker.last_progress:.0f} s")
                            worker.last_progress = now
                            stop.set()
                    if now >= end:
                        stop.set()
                    finished.wait(0.5)  # the watchdog's period
                elapsed = time.monotonic() - started
                rss = server.rss_kib()
        finally:
            stop.set()
            server.stop()
    errors: Dict[str, int] = {}
    for worker in workers:
        for name, n in worker.errors.items():
            errors[name] = errors.get(name, 0) + n
    calls = sum(w.calls for w in workers)
    return {"threads": threads, "calls": calls, "calls_per_s": calls / elapsed,
            "seconds": elapsed, "callbacks": sum(w.callbacks for w in workers),
            "pings": sum(w.pinger.pings for w in workers),
            "wrong": sum(w.wrong for w in workers), "errors": errors, "stalls": stalls,
            "per_thread": [w.calls for w in workers], "server_rss_kib": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--calls-per-thread", type=int, default=None,
                        help="stop after this many calls per thread instead")
    parser.add_argument("--callback-every", type=int, default=100)
    parser.add_argument("--stall", type=float, default=20.0,
                        help="seconds without progress that count as a deadlock")
    parser.add_argument("--transport", choices=["tcp", "unix", "tls"], default="tcp")
    options = parser.parse_args()
    print(f"load average at start: {load_average()}", flush=True)
    figures = run(options.threads, options.seconds, options.calls_per_thread,
                  options.callback_every, options.stall, options.transport)
    print_figures(f"{options.threads} threads sharing one connection "
                  f"({options.transport}, {figures['seconds']:.0f} s)", {
                      "calls": f"{figures['calls']:,}",
                      "calls/s": f"{figures['calls_per_s']:,.0f}",
                      "callbacks made / pings received":
                          f"{figures['callbacks']:,} / {figures['pings']:,}",
                      "wrong (must be 0)": figures["wrong"],
                      "errors (must be none)": figures["errors"] or "none",
                      "stalls (must be none)": figures["stalls"] or "none",
                      "calls per thread (min / max)":
                          f"{min(figures['per_thread']):,} / {max(figures['per_thread']):,}",
                      "server RSS at the end": mib(figures["server_rss_kib"]),
                      "load average at end": load_average(),
                  })


if __name__ == "__main__":
    main()
