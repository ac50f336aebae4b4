#!/usr/bin/env python3
"""Soak: many concurrent connections to one server, every answer checked.

    .venv/bin/python benchmarks/soak/connections.py                 # 1,000 x 200 calls
    .venv/bin/python benchmarks/soak/connections.py --connections 20 --calls 20 --procs 1

A server (:mod:`soakserver`) runs in a child process. ``--procs`` client
processes each open their share of ``--connections`` connections, one per
gevent greenlet, each with its own ``syncpb.connect``; once every process
has all its connections open, all start at once and each greenlet makes
``--calls`` calls of ``echo(token, payload)``: a token unique to the call
and a payload of one of six kinds (ints, text, bytes, nested lists and
dicts, up to ~4 KB). Every answer must be exactly ``(token, payload)``:

* lost: a call that raised (or hit ``--call-timeout``); must be 0;
* misrouted: an answer carrying another call's token; must be 0;
* wrong: any other wrong answer; must be 0.

The clients are split over processes because the clients, not the server,
are the bottleneck: one client process keeps one core busy. (They used to
be split also because a threaded client waited in ``select()``, which
refuses file descriptors of 1024 and above; it now waits in ``poll()``.)
Printed: those counts, calls/s over the whole run, and the server's RSS
before the connections, at its peak while calling, and after they closed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (ServerProcess, cpu_seconds, load_average, make_certs,  # noqa: E402
                    make_payload, mib, print_figures, raise_nofile, soak_connect)

import syncpb  # noqa: E402

SCRIPT = os.path.abspath(__file__)
#: Connections a client process opens at once (the listen backlog is 128).
CONNECT_AT_ONCE = 32


def classify(token: str, payload: Any, answer: Any) -> str:
    """``ok``, ``misrouted`` (another call's token) or ``wrong``."""
    if answer == (token, payload):
        return "ok"
    if isinstance(answer, tuple) and len(answer) == 2 and answer[0] != token \
            and isinstance(answer[0], str) and answer[0].count(".") == 2:
        return "misrouted"
    return "wrong"


class _Tally:
    """One client process's counts (shared by its callers; greenlets of one
    hub never interleave inside an update, threads take the lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: Dict[str, Any] = {"ok": 0, "lost": 0, "misrouted": 0, "wrong": 0,
                                     "connect_failed": 0, "errors": {}, "first_errors": []}

    def add(self, key: str, n: int = 1, error: Optional[BaseException] = None) -> None:
        with self.lock:
            self.data[key] += n
            if error is not None:
                name = type(error).__name__
                self.data["errors"][name] = self.data["errors"].get(name, 0) + 1
                if len(self.data["first_errors"]) < 2:
                    self.data["first_errors"].append(f"{name}: {error}"[:300])


def _calls(conn: Optional[syncpb.Connection], tally: _Tally, seed: int, index: int, k: int,
           calls: int, call_timeout: float, kinds: int = 6) -> None:
    """One connection's calls, each answer checked (payload kinds below ``kinds``)."""
    if conn is None:
        tally.add("lost", calls)
        return
    rng = random.Random(seed * 1_000_003 + index * 10_007 + k)
    root = conn.root
    for i in range(calls):
        token = f"{index}.{k}.{i}"
        payload = make_payload(rng, i % kinds)
        try:
            answer = root.call("echo", token, payload, timeout=call_timeout)
        except Exception as exc:  # counted: every failure is a lost call
            tally.add("lost", error=exc)
            continue
        tally.add(classify(token, payload, answer))


def _open(address: str, certdir: Optional[str], tally: _Tally) -> Optional[syncpb.Connection]:
    try:
        return soak_connect(address, certdir, timeout=60.0)
    except syncpb.SyncPBError as exc:
        tally.add("connect_failed", error=exc)
        return None


def _go_greenlets(address: str, certdir: Optional[str], count: int, run_calls: Any,
                  tally: _Tally) -> List[Optional[syncpb.Connection]]:
    """Greenlet mode: one greenlet per connection, all in this thread's hub."""
    import gevent
    import gevent.lock
    import gevent.select
    conns: List[Optional[syncpb.Connection]] = [None] * count
    gate = gevent.lock.BoundedSemaphore(CONNECT_AT_ONCE)

    def open_one(k: int) -> None:
        with gate:
            conns[k] = _open(address, certdir, tally)

    gevent.joinall([gevent.spawn(open_one, k) for k in range(count)])
    print(f"READY {sum(c is not None for c in conns)}", flush=True)
    gevent.select.select([sys.stdin.fileno()], [], [])  # GO, without blocking the hub
    sys.stdin.readline()
    started = time.perf_counter()
    gevent.joinall([gevent.spawn(run_calls, conns[k], k) for k in range(count)])
    tally.data["seconds"] = time.perf_counter() - started
    return conns


def _go_threads(address: str, certdir: Optional[str], count: int, run_calls: Any,
                tally: _Tally) -> List[Optional[syncpb.Connection]]:
    """Thread mode: one OS thread per connection."""
    conns: List[Optional[syncpb.Connection]] = [None] * count
    gate = threading.BoundedSemaphore(CONNECT_AT_ONCE)
    go = threading.Event()

    def one(k: int) -> None:
        with gate:
            conns[k] = _open(address, certdir, tally)
        opened.release()
        go.wait()
        run_calls(conns[k], k)

    opened = threading.Semaphore(0)
    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(count)]
    for thread in threads:
        thread.start()
    for _ in range(count):
        opened.acquire()
    print(f"READY {sum(c is not None for c in conns)}", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    tally.data["seconds"] = time.perf_counter() - started
    return conns


def client_main(argv: List[str]) -> None:
    """One client process: ``client ADDRESS CERTDIR CONNECTIONS CALLS SEED INDEX TIMEOUT MODE``."""
    address, certdir = argv[0], argv[1] or None
    count, calls, seed, index = int(argv[2]), int(argv[3]), int(argv[4]), int(argv[5])
    call_timeout, mode, kinds = float(argv[6]), argv[7], int(argv[8])
    raise_nofile()
    tally = _Tally()

    def run_calls(conn: Optional[syncpb.Connection], k: int) -> None:
        _calls(conn, tally, seed, index, k, calls, call_timeout, kinds)

    go = _go_greenlets if mode == "greenlets" else _go_threads
    for conn in go(address, certdir, count, run_calls, tally):
        if conn is not None:
            conn.close()
    print("RESULT " + json.dumps(tally.data), flush=True)


class _Client:
    """A client process and what it printed."""

    def __init__(self, args: List[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, SCRIPT, "client", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.ready = False
        self.result: Optional[Dict[str, Any]] = None

    def read_line(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if line.startswith("READY"):
            self.ready = True
        elif line.startswith("RESULT "):
            self.result = json.loads(line[7:])
        elif not line:
            self.ready = True  # exited: nothing more will come
            if self.result is None:
                self.result = {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # only this child, by its PID
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def _pump(clients: List[_Client], done: Any, deadline: float, server: ServerProcess,
          peak: List[int]) -> None:
    """Read the clients' lines until ``done()`` or the deadline; track peak RSS."""
    while not done() and time.monotonic() < deadline:
        pipes = {c.proc.stdout: c for c in clients
                 if c.proc.stdout is not None and not c.proc.stdout.closed
                 and c.result is None}
        if pipes:
            ready, _, _ = select.select(list(pipes), [], [], 0.25)
            for pipe in ready:
                pipes[pipe].read_line()
        peak[0] = max(peak[0], server.rss_kib())


#: How many of make_payload's kinds each --payloads choice uses: "small"
#: leaves out the structured records (kinds 4 and 5), whose encoding and
#: decoding (issue 14's subject) then bound the rate.
PAYLOAD_KINDS = {"varied": 6, "small": 4}


def run(connections: int = 1000, calls: int = 200, procs: int = 4, transport: str = "tcp",
        call_timeout: float = 60.0, deadline: float = 900.0, seed: int = 1,
        certdir: Optional[str] = None, mode: str = "greenlets",
        payloads: str = "varied") -> Dict[str, Any]:
    """The whole soak; returns its figures (see the module docstring)."""
    raise_nofile()
    procs = max(1, min(procs, connections))
    with tempfile.TemporaryDirectory(prefix="soak") as workdir:
        if transport == "tls" and certdir is None:
            certdir = make_certs(os.path.join(workdir, "certs"))
        server = ServerProcess(transport, workdir, certdir)
        clients: List[_Client] = []
        try:
            end = time.monotonic() + deadline
            rss_before = server.rss_kib()
            peak = [rss_before]
            shares = [connections // procs + (1 if i < connections % procs else 0)
                      for i in range(procs)]
            clients = [_Client([server.address, certdir or "", str(n), str(calls), str(seed),
                                str(i), str(call_timeout), mode, str(PAYLOAD_KINDS[payloads])])
                       for i, n in enumerate(shares)]
            _pump(clients, lambda: all(c.ready for c in clients), end, server, peak)
            rss_connected = server.rss_kib()
            started, cpu_started = time.perf_counter(), cpu_seconds(server.pid)
            for client in clients:
                assert client.proc.stdin is not None
                client.proc.stdin.write(b"GO\n")
                client.proc.stdin.flush()
            _pump(clients, lambda: all(c.result is not None for c in clients), end, server,
                  peak)
            wall = time.perf_counter() - started
            server_cpu = cpu_seconds(server.pid) - cpu_started
            results = [c.result or {} for c in clients]
            for client in clients:
                client.stop()
            settle = time.monotonic() + 30
            stats = server.stats()
            while stats["sessions"] > 1 and time.monotonic() < settle:
                time.sleep(0.1)
                stats = server.stats()
            rss_after = server.rss_kib()
        finally:
            for client in clients:
                client.stop()
            server.stop()
    total = connections * calls
    counted = {key: sum(r.get(key, 0) for r in results)
               for key in ("ok", "lost", "misrouted", "wrong", "connect_failed")}
    unreported = total - counted["ok"] - counted["lost"] - counted["misrouted"] - counted["wrong"]
    errors: Dict[str, int] = {}
    first_errors: List[str] = []
    for r in results:
        for name, n in r.get("errors", {}).items():
            errors[name] = errors.get(name, 0) + n
        first_errors += r.get("first_errors", [])
    seconds = max([r.get("seconds", 0.0) for r in results] + [1e-9])
    return {
        "calls": total, "ok": counted["ok"], "lost": counted["lost"] + unreported,
        "misrouted": counted["misrouted"], "wrong": counted["wrong"],
        "connect_failed": counted["connect_failed"], "errors": errors,
        "first_errors": first_errors[:3],
        "calls_per_s": counted["ok"] / seconds, "wall_s": wall,
        "server_cpu_share": server_cpu / wall,
        "rss_before_kib": rss_before, "rss_connected_kib": rss_connected,
        "rss_peak_kib": peak[0], "rss_after_kib": rss_after,
        "sessions_after": stats["sessions"] - 1,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=200, help="calls per connection")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--transport", choices=["tcp", "unix", "tls"], default="tcp")
    parser.add_argument("--call-timeout", type=float, default=60.0)
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds, whole run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=["greenlets", "threads"], default="greenlets",
                        help="each connection driven by a gevent greenlet or an OS thread")
    parser.add_argument("--payloads", choices=sorted(PAYLOAD_KINDS), default="varied",
                        help="varied: all six kinds; small: no structured records (kinds 0-3)")
    options = parser.parse_args()
    print(f"load average at start: {load_average()}", flush=True)
    figures = run(options.connections, options.calls, options.procs, options.transport,
                  options.call_timeout, options.deadline, options.seed, mode=options.mode,
                  payloads=options.payloads)
    print_figures(f"{options.connections} connections x {options.calls} calls "
                  f"({options.procs} client processes, {options.mode}, {options.transport}, "
                  f"{options.payloads} payloads)", {
                      "calls": f"{figures['calls']:,}",
                      "ok": f"{figures['ok']:,}",
                      "lost (must be 0)": figures["lost"],
                      "misrouted (must be 0)": figures["misrouted"],
                      "wrong (must be 0)": figures["wrong"],
                      "connect failures": figures["connect_failed"],
                      "errors": figures["errors"] or "none",
                      "first errors": figures["first_errors"] or "none",
                      "calls/s": f"{figures['calls_per_s']:,.0f}",
                      "server CPU while calling": f"{figures['server_cpu_share']:.0%} of one core",
                      "server RSS before": mib(figures["rss_before_kib"]),
                      "server RSS all connected": mib(figures["rss_connected_kib"]),
                      "server RSS peak during calls": mib(figures["rss_peak_kib"]),
                      "server RSS after close": mib(figures["rss_after_kib"]),
                      "server connections left": figures["sessions_after"],
                      "load average at end": load_average(),
                  })


if __name__ == "__main__":
    main()
