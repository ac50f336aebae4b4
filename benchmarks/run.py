#!/usr/bin/env python3
"""Benchmark driver: syncpb against Twisted PB, Pyro5 (msgpack) and a raw
socket echo, every client and server in its own process.

    .venv/bin/python benchmarks/run.py                       # 3 rounds x 2 s
    .venv/bin/python benchmarks/run.py --quick               # ~1 min smoke run
    .venv/bin/python benchmarks/run.py --workloads W1,W2 --peers syncpb,twisted

For each (round, workload, peer) the driver starts a fresh server process,
reads its ``ADDR`` line, starts the client process(es), waits until every
client is warmed up (``READY``), releases them together (``GO``), collects
their ``RESULT`` JSON and stops the server by its PID. Single-client
workloads (W1 W2 W3 W5 W6) pin server and client to one CPU with
``taskset -c CPU``; W4 (8 client processes) runs unpinned. The peer order
rotates between rounds; the table shows the median over rounds.

Progress goes to stderr; the Markdown report goes to stdout.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from importlib import metadata, util

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEER_SCRIPT = os.path.join(HERE, "peer.py")
sys.path.insert(0, HERE)

from peers import PEERS  # noqa: E402
from peers.common import WORKLOADS  # noqa: E402

ALL_PEERS = ["syncpb", "twisted", "pyro5", "raw"]
ALL_WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6"]
PINNED = {"W1", "W2", "W3", "W5", "W6"}
PEER_MODULES_NEEDED = {"twisted": "twisted", "pyro5": "Pyro5", "raw": None}

# (workload, what the ratio is against, factor, strict?)
TARGETS = [
    ("W1", "twisted", 2.5, False),
    ("W1", "pyro5", 1.0, True),
    ("W2", "twisted", 10.0, False),
    ("W3", "twisted", 4.0, False),
    ("W4", "twisted", 1.5, False),
    ("W5", "twisted", 2.0, False),
    ("W6", "W1", 0.8, False),  # syncpb's W6 against syncpb's own W1
]


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- processes

class ProcError(Exception):
    pass


class Proc:
    """A child process speaking the line protocol on stdin/stdout; stderr goes
    to a temporary file (so a chatty child can never block on a full pipe)."""

    def __init__(self, argv, env, name, pin_cpu=None):
        self.name = name
        self.argv = argv
        self.stderr = tempfile.TemporaryFile()
        preexec = None
        if pin_cpu is not None and not shutil.which("taskset"):
            cpu = pin_cpu
            # fallback when taskset is missing
            preexec = lambda: os.sched_setaffinity(0, {cpu})  # noqa: E731
        elif pin_cpu is not None:
            argv = ["taskset", "-c", str(pin_cpu)] + argv
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.stderr, env=env, preexec_fn=preexec,
                                  close_fds=True)
        self.pid = self.p.pid
        self.buf = b""
        self.lines = deque()

    def read_line(self, deadline):
        fd = self.p.stdout.fileno()
        while not self.lines:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProcError(f"{self.name}: no answer in time")
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                try:
                    self.p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                raise ProcError(f"{self.name}: exited (rc={self.p.returncode}) "
                                f"before answering; stderr:\n{self.stderr_tail()}")
            self.buf += chunk
            *full, self.buf = self.buf.split(b"\n")
            self.lines.extend(x.decode("utf-8", "replace") for x in full)
        return self.lines.popleft()

    def expect(self, tag, deadline):
        """Skip unrelated output until a line starting with ``tag``; an
        ``ERROR`` line raises."""
        while True:
            line = self.read_line(deadline)
            if line.startswith("ERROR"):
                raise ProcError(f"{self.name}: {line[6:]}\n{self.stderr_tail()}")
            if line == tag or line.startswith(tag + " "):
                return line[len(tag):].strip()

    def send(self, text):
        os.write(self.p.stdin.fileno(), text.encode())

    def stop(self, grace=5.0):
        """Stop this child (and only it) by its PID: SIGTERM, then SIGKILL."""
        if self.p.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(timeout=grace)
        for f in (self.p.stdin, self.p.stdout):
            try:
                f.close()
            except OSError:
                pass

    def wait_exit(self, timeout):
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()

    def stderr_tail(self, n=2000):
        try:
            self.stderr.seek(0)
            data = self.stderr.read()
        except (OSError, ValueError):
            return ""
        return data[-n:].decode("utf-8", "replace")

    def close(self):
        self.stop()
        self.stderr.close()


def child_env(syncpb_path):
    """Children import syncpb from ``syncpb_path`` (default: this work tree)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [_importable(syncpb_path)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("PYTHONSTARTUP", None)
    return env


def _importable(syncpb_path):
    """A directory from which ``import syncpb`` gets ``syncpb_path``'s code.

    The source tree keeps ``syncpb.tls`` and ``syncpb.adapters`` at its top
    level (``tls/``, ``adapters/``; setup.py maps them). Put first on the
    path, the tree alone would give its own ``syncpb`` but the *installed*
    ``syncpb.tls``: another tree's TLS code would be measured. A temporary
    overlay (symlinks, removed at exit) puts both under one ``syncpb``."""
    extra = [name for name in ("tls", "adapters")
             if os.path.isdir(os.path.join(syncpb_path, name))
             and not os.path.exists(os.path.join(syncpb_path, "syncpb", name))]
    if os.path.abspath(syncpb_path) == REPO or not extra:
        return syncpb_path
    overlay = tempfile.mkdtemp(prefix="syncpb-overlay-")
    atexit.register(shutil.rmtree, overlay, True)
    package = os.path.join(overlay, "syncpb")
    os.mkdir(package)
    source = os.path.join(syncpb_path, "syncpb")
    for name in os.listdir(source):
        os.symlink(os.path.join(source, name), os.path.join(package, name))
    for name in extra:
        os.symlink(os.path.join(syncpb_path, name), os.path.join(package, name))
    return overlay


def run_cell(peer, workload, args, env):
    """One measurement: fresh server, client(s), result dict."""
    pin = args.cpu if (workload in PINNED and not args.no_pin) else None
    nclients = args.clients if workload == "W4" else 1
    lifetime = int(args.warmup + args.seconds + args.timeout + 180)
    started = []
    try:
        server = Proc([sys.executable, PEER_SCRIPT, "server", peer,
                       "--lifetime", str(lifetime)], env, f"{peer} server", pin)
        started.append(server)
        addr = server.expect("ADDR", time.monotonic() + 60)
        cargs = ["--seconds", str(args.seconds), "--warmup", str(args.warmup),
                 "--max-count", str(args.max_count), "--inflight", str(args.inflight),
                 "--threads", str(args.threads), "--timeout", str(args.timeout),
                 "--pyro5-w5", args.pyro5_w5, "--lifetime", str(lifetime)]
        clients = []
        for k in range(nclients):
            c = Proc([sys.executable, PEER_SCRIPT, "client", peer, workload, addr] + cargs,
                     env, f"{peer} {workload} client {k}", pin)
            started.append(c)
            clients.append(c)
        deadline = time.monotonic() + 90 + args.warmup * 2 + args.timeout
        for c in clients:
            c.expect("READY", deadline)
        for c in clients:
            c.send("GO\n")
        deadline = time.monotonic() + args.seconds * 2 + args.timeout + 60
        results = [json.loads(c.expect("RESULT", deadline)) for c in clients]
        for c in clients:
            c.wait_exit(10)
    except ProcError as e:
        return {"error": str(e)}
    finally:
        for pr in reversed(started):
            pr.close()

    rate = sum(r["calls"] / r["elapsed"] for r in results if r["elapsed"] > 0)
    if workload == "W3":
        value = sum(r["calls"] * r["bytes_per_call"] / r["elapsed"] for r in results) / 1e6
    else:
        value = rate
    return {"value": value, "calls_per_s": rate, "mode": results[0]["mode"],
            "calls": sum(r["calls"] for r in results),
            "elapsed": max(r["elapsed"] for r in results),
            "clients": len(results), "pinned_cpu": pin}


# ---------------------------------------------------------------- facts

def pkg_version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts(args):
    cpu_model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()} "
                  f"({sys.executable})",
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "driver_affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "loadavg_start": os.getloadavg(),
        "taskset": shutil.which("taskset") or "missing (sched_setaffinity fallback)",
        "repo_commit": commit or "no commit",
        "versions": {name: pkg_version(name) for name in
                     ("syncpb", "Twisted", "Pyro5", "msgpack", "gevent", "serpent")},
    }


def peer_available(peer, env):
    """(ok, reason). syncpb is probed in a child process (importing it must
    not disturb the driver); the others by module lookup."""
    if peer == "syncpb":
        code = ("import sys; sys.path.insert(0, %r)\n"
                "from peers.syncpb_peer import available\n"
                "ok, why = available(); print('OK' if ok else 'NO', why)") % HERE
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                 text=True, env=env, timeout=60, cwd=HERE)
        except subprocess.TimeoutExpired:
            return False, "import syncpb timed out"
        line = (out.stdout.strip().splitlines() or ["NO " + out.stderr.strip()[-300:]])[-1]
        return line.startswith("OK"), line[3:]
    mod = PEER_MODULES_NEEDED.get(peer)
    if mod and util.find_spec(mod) is None:
        return False, f"{mod} not installed"
    if peer == "pyro5" and util.find_spec("msgpack") is None:
        return False, "msgpack not installed"
    return True, ""


# ---------------------------------------------------------------- report

def label(w, args):
    return {
        "W1": "W1 seq add",
        "W2": "W2 seq echo 100 records",
        "W3": "W3 seq echo 256 KiB",
        "W4": f"W4 {args.clients} procs x seq add",
        "W5": f"W5 add, {args.inflight} in flight",
        "W6": f"W6 add, {args.threads} threads 1 conn",
    }[w]


def fmt(v, workload):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:,.1f}" if workload == "W3" else f"{v:,.0f}"


def ratio(a, b):
    if a is None or b is None or isinstance(a, str) or isinstance(b, str) or not b:
        return None
    return a / b


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}x"


def target_checks(med):
    """[(workload, label, ratio or None, status)]"""
    out = []
    for w, against, factor, strict in TARGETS:
        if w not in med:
            continue
        s = med[w].get("syncpb")
        if against == "W1":
            o = med.get("W1", {}).get("syncpb")
            label = f"W6/W1(syncpb) >= {factor:g}"
        else:
            o = med[w].get(against)
            label = f"{'>' if strict else '>='} {factor:g}x {against}"
        r = ratio(s, o)
        if r is None:
            status = "n/a"
        else:
            status = "met" if (r > factor if strict else r >= factor) else "MISSED"
        out.append((w, label, r, status))
    return out


def report(args, facts, peers, unavailable, workloads, cells, cmdline):
    P = print
    # medians
    med = {}
    for w in workloads:
        med[w] = {}
        for p in peers:
            vals = [c["value"] for c in cells.get((w, p), []) if "value" in c]
            errs = [c for c in cells.get((w, p), []) if "error" in c]
            if vals and not errs:
                med[w][p] = statistics.median(vals)
            elif errs:
                med[w][p] = "ERR"
    P("# syncpb benchmark")
    P()
    if args.quick:
        P("**QUICK SMOKE RUN** (1 round, %.1f s per workload): figures are indicative "
          "only, not a measurement." % args.seconds)
        P()
    elif args.rounds < 3:
        P(f"**Only {args.rounds} round(s)**: a valid measurement needs at least 3.")
        P()
    P("Command: `%s`" % cmdline)
    P()
    P(f"Rounds: {args.rounds}, measured phase: {args.seconds:g} s (or {args.max_count:,} "
      f"calls) after a {args.warmup:g} s warm-up; value = median over rounds. "
      f"W1 W2 W3 W5 W6: server and client pinned to CPU {args.cpu} "
      f"({'disabled by --no-pin' if args.no_pin else 'taskset -c %d' % args.cpu}); "
      f"W4 unpinned. W4 = {args.clients} client processes, W5 = {args.inflight} in "
      f"flight, W6 = {args.threads} threads.")
    P()
    for p, why in unavailable:
        P(f"- {p}: not available ({why})")
    if unavailable:
        P()

    cols = ["workload", "unit"] + peers
    others = [p for p in ("twisted", "pyro5", "raw") if p in peers]
    has_s = "syncpb" in peers
    if has_s:
        cols += [f"syncpb/{o}" for o in others] + ["W6/W1(syncpb)", "target", "status"]
    P("| " + " | ".join(cols) + " |")
    aligns = ["---", "---"] + ["---:"] * (len(cols) - 2)
    if has_s:
        aligns[-2:] = ["---", "---"]  # target, status
    P("|" + "|".join(aligns) + "|")
    checks = target_checks(med)
    for w in workloads:
        unit = "MB/s" if w == "W3" else "calls/s"
        row = [label(w, args), unit] + [fmt(med[w].get(p), w) for p in peers]
        if has_s:
            s = med[w].get("syncpb")
            row += [fmt_ratio(ratio(s, med[w].get(o))) for o in others]
            row.append(fmt_ratio(ratio(s, med.get("W1", {}).get("syncpb"))) if w == "W6" else "")
            mine = [c for c in checks if c[0] == w]
            row.append("; ".join(c[1] for c in mine))
            row.append("; ".join(c[3] for c in mine))
        P("| " + " | ".join(row) + " |")
    P()
    if has_s and checks:
        P("Targets: " + ", ".join(f"{w} {lbl}: {fmt_ratio(r)} **{st}**" for w, lbl, r, st in checks))
        P()

    # per-round details
    P("## Per round")
    P()
    P("| workload | peer | " + " | ".join(f"r{i + 1}" for i in range(args.rounds))
      + " | median | spread |")
    P("|---|---|" + "---:|" * (args.rounds + 2))
    for w in workloads:
        for p in peers:
            cs = cells.get((w, p), [])
            vals = [c.get("value") for c in cs]
            shown = [fmt(v, w) if v is not None else "ERR" for v in vals]
            good = [v for v in vals if v is not None]
            spread = (f"{(max(good) / min(good) - 1) * 100:.0f}%"
                      if len(good) > 1 and min(good) > 0 else "")
            P(f"| {w} | {p} | " + " | ".join(shown + [""] * (args.rounds - len(shown)))
              + f" | {fmt(med[w].get(p), w)} | {spread} |")
    P()

    P("## How each peer ran each workload")
    P()
    for w in workloads:
        for p in peers:
            modes = sorted({c["mode"] for c in cells.get((w, p), []) if "mode" in c})
            if modes:
                P(f"- {w} {p}: " + " / ".join(modes))
    P()
    errors = [(k, c["error"]) for k, cs in cells.items() for c in cs if "error" in c]
    if errors:
        P("## Errors")
        P()
        for (w, p), e in errors:
            P(f"- {w} {p}:")
            P("```")
            P(e.strip()[-1500:])
            P("```")
        P()

    print_machine(P, facts)
    P(f"- loadavg_end: {os.getloadavg()}")
    return med, checks


def print_machine(P, facts):  # noqa: N803 - P is the report's print function
    """The report's "Machine" section (shared by the other benchmark drivers)."""
    P("## Machine")
    P()
    for k, v in facts.items():
        if k == "versions":
            P("- versions: " + ", ".join(f"{n} {ver}" for n, ver in v.items()))
        else:
            P(f"- {k}: {v}")


# ---------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick: 1)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="measured phase per workload (default 2; --quick: 0.5)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="warm-up per client (default 0.3; --quick: 0.1)")
    ap.add_argument("--max-count", type=int, default=5_000_000,
                    help="call-count bound of a measured phase")
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke run")
    ap.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    ap.add_argument("--peers", default=",".join(ALL_PEERS))
    ap.add_argument("--cpu", type=int, default=0, help="CPU to pin single-client workloads to")
    ap.add_argument("--no-pin", action="store_true", help="do not pin anything")
    ap.add_argument("--clients", type=int, default=8, help="W4 client processes")
    ap.add_argument("--inflight", type=int, default=64, help="W5 calls in flight")
    ap.add_argument("--threads", type=int, default=16, help="W6 threads")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-call safety timeout")
    ap.add_argument("--pyro5-w5", choices=("batch", "threads"), default="batch",
                    help="Pyro5's W5: BatchProxy of N calls, or N threads with own proxies")
    ap.add_argument("--syncpb-path", metavar="DIR", default=REPO,
                    help="directory to import syncpb from (default: this work tree)")
    ap.add_argument("--json", metavar="PATH", help="also write all raw results as JSON")
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.seconds is None:
        args.seconds = 0.5 if args.quick else 2.0
    if args.warmup is None:
        args.warmup = 0.1 if args.quick else 0.3
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        ap.error("--rounds >= 1, --seconds > 0, --warmup >= 0")
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    args.peers = [p.strip().lower() for p in args.peers.split(",") if p.strip()]
    for w in args.workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w}")
    for p in args.peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p}")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    cmdline = " ".join(shlex.quote(a) for a in [sys.executable, sys.argv[0]] + argv)
    env = child_env(os.path.abspath(args.syncpb_path))
    facts = machine_facts(args)

    peers, unavailable = [], []
    for p in args.peers:
        ok, why = peer_available(p, env)
        if ok:
            peers.append(p)
            if p == "syncpb":
                facts["syncpb_import"] = why
        else:
            unavailable.append((p, why))
            log(f"{p}: not available ({why})")
    if not peers:
        log("no peer available")
        return 2

    cells = {}
    t_start = time.monotonic()
    for r in range(args.rounds):
        k = r % len(peers)
        order = peers[k:] + peers[:k]
        for w in args.workloads:
            for p in order:
                t0 = time.monotonic()
                res = run_cell(p, w, args, env)
                res["round"] = r + 1
                cells.setdefault((w, p), []).append(res)
                if "error" in res:
                    log(f"round {r + 1} {w} {p}: ERROR {res['error'].splitlines()[0]}")
                else:
                    unit = "MB/s" if w == "W3" else "calls/s"
                    log(f"round {r + 1} {w} {p}: {res['value']:,.1f} {unit} "
                        f"({time.monotonic() - t0:.1f} s)")
    log(f"total {time.monotonic() - t_start:.0f} s")

    med, checks = report(args, facts, peers, unavailable, args.workloads, cells, cmdline)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": cmdline, "facts": facts, "args": vars(args),
                       "unavailable": unavailable,
                       "cells": {f"{w}/{p}": cs for (w, p), cs in cells.items()},
                       "median": med,
                       "targets": [{"workload": w, "target": lbl, "ratio": r, "status": st}
                                   for w, lbl, r, st in checks]}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
