#!/usr/bin/env python3
"""Benchmark driver: syncpb against Twisted PB, Pyro5 (msgpack) and a raw
socket echo, every client and server in its own process.

    .venv/bin/python benchmarks/run.py                       # 3 rounds x 2 s
    .venv/bin/python benchmarks/run.py --quick               # ~1 min smoke run
    .venv/bin/python benchmarks/run.py --workloads W1,W2 --peers syncpb,twisted
    .venv/bin/python benchmarks/run.py --json r.json --chart r.png   # + figures, chart
    .venv/bin/python benchmarks/run.py --chart-from r.json --chart r.png  # redraw only
    .venv/bin/python benchmarks/run.py --workloads W2 --peers syncpb --segment 1460

For each (round, workload, peer) the driver starts a fresh server process,
reads its ``ADDR`` line, starts the client process(es), waits until every
client is warmed up (``READY``), releases them together (``GO``), collects
their ``RESULT`` JSON and stops the server by its PID. Single-client
workloads (W1 W2 W3 W5 W6) pin server and client to one CPU with
``taskset -c CPU``; W4 (8 client processes) runs unpinned. With
``--client-cpu N`` their clients run on CPU N instead, each process with a
CPU of its own, as client and server on two machines. The peer order
rotates between rounds; the table shows the median over rounds.

Split delivery: with W2 and syncpb selected, each round also runs syncpb's
W2 with every read of both syncpb processes capped at ``--segment`` bytes
(1,460 by default, an Ethernet MSS; 0 turns it off), as when a message
arrives in TCP segments on a real network. It is the row "W2 (1,460-byte
segments)" (key ``W2s``), with its ratio to syncpb's W2 delivered whole.

Progress goes to stderr (a line as each cell starts and as it ends); the
Markdown report goes to stdout. ``--chart`` needs matplotlib (in the
``bench`` extra).
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
from datetime import datetime
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
# Issue 14's targets where it raised the earlier ones (W1 >= 1.5x Pyro5 and
# >= 0.6x the raw floor, W2 >= 1.0x Pyro5 and >= 50x Twisted, W3 >= 1.5x Pyro5,
# W5 >= 3x Twisted, W2 in 1,460-byte segments >= 0.8x W2 whole).
TARGETS = [
    ("W1", "twisted", 2.5, False),
    ("W1", "pyro5", 1.5, False),
    ("W1", "raw", 0.6, False),
    ("W2", "twisted", 50.0, False),
    ("W2", "pyro5", 1.0, False),
    ("W3", "twisted", 4.0, False),
    ("W3", "pyro5", 1.5, False),
    ("W4", "twisted", 1.5, False),
    ("W5", "twisted", 3.0, False),
    ("W6", "W1", 0.8, False),  # syncpb's W6 against syncpb's own W1
    ("W2s", "W2", 0.8, False),  # syncpb's W2 in segments against its W2 delivered whole
]

#: Rows measured on syncpb only, against one of syncpb's own rows: the
#: split-delivery W2 (``--segment``) against W2 delivered whole.
OWN_BASE = {"W2s": "W2", "W6": "W1"}
SPLIT = "W2s"

#: Run as ``python -c SEGMENT_BOOT BYTES peer.py ARGS...``: caps every read
#: of syncpb's sessions (``syncpb.transport.READ_SIZE``: the size of the
#: buffer they read into, and the most any of their reads takes) at BYTES,
#: then runs peer.py as its own script. (``-c`` puts the current directory
#: first on sys.path: it is dropped, so that syncpb comes from PYTHONPATH,
#: i.e. ``--syncpb-path``, as in the other children.)
SEGMENT_BOOT = (
    "import runpy, sys\n"
    "sys.path[:] = [p for p in sys.path if p]\n"
    "import syncpb.transport\n"
    "syncpb.transport.READ_SIZE = int(sys.argv[1])\n"
    "sys.argv = sys.argv[2:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n")

#: how the chart names the peers
PEER_NAMES = {"syncpb": "syncpb", "twisted": "Twisted PB", "pyro5": "Pyro5 (msgpack)",
              "raw": "raw socket (floor)"}
PEER_COLORS = {"syncpb": "#1f5aa6", "twisted": "#e8843a", "pyro5": "#5a9e4b",
               "raw": "#a3a3a3"}


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def unit_of(workload):
    return "MB/s" if workload == "W3" else "calls/s"


def split_on(args, peers):
    """True when the split-delivery W2 row runs (W2 and syncpb selected)."""
    return bool(args.segment) and "W2" in args.workloads and "syncpb" in peers


def rows_of(args, peers):
    """The report's rows: the workloads, with the split-delivery W2 after W2."""
    out = []
    for w in args.workloads:
        out.append(w)
        if w == "W2" and split_on(args, peers):
            out.append(SPLIT)
    return out


def round_cells(args, order):
    """The (workload, peer) cells of one round, in order (``order``: the
    peers, rotated); the split-delivery W2 is syncpb's only."""
    cells = []
    for w in args.workloads:
        cells += [(w, p) for p in order]
        if w == "W2" and split_on(args, order):
            cells.append((SPLIT, "syncpb"))
    return cells


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def progress_line(index, total, workload, peer, rnd, rounds, result=None,
                  cell_seconds=None, elapsed=None):
    """One progress line for stderr: ``[3/24] W2 twisted round 2/5 ...`` when
    a cell starts; with ``result`` (the cell's dict) the same prefix, then
    its figure, how long it took, the time so far and an estimate of the time
    left (the mean cell time so far times the cells still to run)."""
    head = f"[{index}/{total}] {workload} {peer} round {rnd}/{rounds}"
    if result is None:
        return head + " ..."
    if "error" in result:
        first = (result["error"].strip().splitlines() or ["?"])[0]
        text = f"{head}: ERROR {first}"
    else:
        text = f"{head}: {fmt(result['value'], workload)} {unit_of(workload)}"
    extra = []
    if cell_seconds is not None:
        extra.append(f"{cell_seconds:.1f} s")
    if elapsed is not None:
        extra.append(f"{_clock(elapsed)} elapsed")
        if index < total:
            extra.append(f"~{_clock(elapsed / index * (total - index))} left")
    return text + (f" ({'; '.join(extra)})" if extra else "")


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
    segment = None
    if workload == SPLIT:  # W2 with every read of both syncpb processes capped
        workload, segment = "W2", args.segment
    pin = args.cpu if (workload in PINNED and not args.no_pin) else None
    client_pin = pin if pin is None or args.client_cpu is None else args.client_cpu
    peer_cmd = ([sys.executable, PEER_SCRIPT] if segment is None
                else [sys.executable, "-c", SEGMENT_BOOT, str(segment), PEER_SCRIPT])
    nclients = args.clients if workload == "W4" else 1
    lifetime = int(args.warmup + args.seconds + args.timeout + 180)
    started = []
    try:
        server = Proc(peer_cmd + ["server", peer,
                       "--lifetime", str(lifetime)], env, f"{peer} server", pin)
        started.append(server)
        addr = server.expect("ADDR", time.monotonic() + 60)
        cargs = ["--seconds", str(args.seconds), "--warmup", str(args.warmup),
                 "--max-count", str(args.max_count), "--inflight", str(args.inflight),
                 "--threads", str(args.threads), "--timeout", str(args.timeout),
                 "--pyro5-w5", args.pyro5_w5, "--lifetime", str(lifetime)]
        clients = []
        for k in range(nclients):
            c = Proc(peer_cmd + ["client", peer, workload, addr] + cargs,
                     env, f"{peer} {workload} client {k}", client_pin)
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
    mode = results[0]["mode"]
    if segment is not None:
        mode += (f"; every read of the syncpb server and client capped at {segment:,} "
                 f"bytes (syncpb.transport.READ_SIZE)")
    return {"value": value, "calls_per_s": rate, "mode": mode,
            "calls": sum(r["calls"] for r in results),
            "elapsed": max(r["elapsed"] for r in results),
            "clients": len(results), "pinned_cpu": pin, "client_cpu": client_pin}


def pinning(args) -> str:
    """Where the single-client workloads ran, for the report."""
    if args.no_pin:
        return "not pinned (--no-pin)"
    client_cpu = getattr(args, "client_cpu", None)  # (absent from older JSON files)
    if client_cpu is None or client_cpu == args.cpu:
        return f"server and client pinned to CPU {args.cpu} (taskset -c {args.cpu})"
    return (f"server pinned to CPU {args.cpu}, client to CPU {client_cpu} "
            f"(taskset; --client-cpu)")


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
        SPLIT: f"W2 ({args.segment:,}-byte segments)",
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
        if against in OWN_BASE.values():
            o = med.get(against, {}).get("syncpb")
            label = f"{w}/{against}(syncpb) >= {factor:g}"
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
            if (w, p) not in cells:  # not run (the split-delivery row is syncpb's)
                continue
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
      f"W1 W2 W3 W5 W6: {pinning(args)}; "
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
        cols += [f"syncpb/{o}" for o in others] + ["own ratio (syncpb)", "target", "status"]
    P("| " + " | ".join(cols) + " |")
    aligns = ["---", "---"] + ["---:"] * (len(cols) - 2)
    if has_s:
        aligns[-2:] = ["---", "---"]  # target, status
    P("|" + "|".join(aligns) + "|")
    checks = target_checks(med)
    for w in workloads:
        unit = "MB/s" if w == "W3" else "calls/s"
        row = [label(w, args), unit] + [fmt(med[w].get(p), w) if p in med[w] else "–"
                                        for p in peers]
        if has_s:
            s = med[w].get("syncpb")
            row += [fmt_ratio(ratio(s, med[w].get(o))) if o in med[w] else "–" for o in others]
            base = OWN_BASE.get(w)
            row.append(f"{fmt_ratio(ratio(s, med.get(base, {}).get('syncpb')))} {w}/{base}"
                       if base else "")
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
            if (w, p) not in cells:
                continue
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


# ---------------------------------------------------------------- figures (JSON) and chart

CHART_NEEDS = ("--chart needs matplotlib, an optional benchmark dependency: "
               "pip install -e '.[bench]'  (or: pip install 'matplotlib>=3.7')")


class ChartError(Exception):
    pass


def caveats(args, workloads, peers):
    """{"W5/pyro5": text}: the cells that are not like for like (the chart
    marks them; the README's table has the same footnotes)."""
    out = {}
    if "W5" in workloads and "pyro5" in peers and args.pyro5_w5 == "batch":
        out["W5/pyro5"] = (f"Pyro5's W5 is one BatchProxy request carrying {args.inflight} "
                           f"calls, not {args.inflight} calls in flight")
    if "W6" in workloads and "twisted" in peers:
        out["W6/twisted"] = (f"Twisted's W6 is {args.threads} concurrent callers in its "
                             f"reactor (no OS threads)")
    if "W6" in workloads and "pyro5" in peers:
        out["W6/pyro5"] = (f"Pyro5's W6 is {args.threads} threads with a proxy "
                           f"(connection) each")
    return out


def results_doc(args, facts, peers, unavailable, cells, med, checks, cmdline):
    """What ``--json`` writes; ``--chart-from`` reads it back."""
    rows = rows_of(args, peers)
    return {
        "command": cmdline, "date": facts.get("date"), "facts": facts, "args": vars(args),
        "peers": peers, "workloads": rows, "unavailable": unavailable,
        "labels": {w: label(w, args) for w in rows},
        "units": {w: unit_of(w) for w in rows},
        "notes": caveats(args, args.workloads, peers),
        "cells": {f"{w}/{p}": cs for (w, p), cs in cells.items()},
        "median": med,
        "ratios": {w: {o: ratio(med[w].get("syncpb"), med[w].get(o)) for o in peers
                       if o != "syncpb" and o in med[w]} for w in med if "syncpb" in peers},
        "own_ratios": {w: ratio(med[w].get("syncpb"), med.get(base, {}).get("syncpb"))
                       for w, base in OWN_BASE.items() if w in med and "syncpb" in med[w]},
        "targets": [{"workload": w, "target": lbl, "ratio": r, "status": st}
                    for w, lbl, r, st in checks],
    }


def chart_missing():
    """None if ``--chart`` can work, else the message to print."""
    try:
        found = util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else CHART_NEEDS


def _short(v, unit):
    """A bar's label: 50, 8,209, 25.1k, 1.43M calls/s; 199.2, 1,210 MB/s."""
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k"
    if v >= 1e3 or unit == "calls/s":
        return f"{v:,.0f}"
    return f"{v:.1f}"


def _axis_tick(v, _pos=None):
    """A log axis' tick: 100, 1,000, 10k, 1M."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:,.0f}" if v >= 1 else f"{v:g}"


def _tick_label(w, doc):
    text = doc.get("labels", {}).get(w, w)
    if text.startswith(w + " "):
        text = w + "\n" + text[len(w) + 1:]
    r = (doc.get("ratios") or {}).get(w, {}).get("twisted")
    if r is None:
        med = doc.get("median", {}).get(w, {})
        r = ratio(med.get("syncpb"), med.get("twisted"))
    if isinstance(r, (int, float)):
        text += f"\n{r:.2f}x Twisted"
    own = (doc.get("own_ratios") or {}).get(w)
    if w == SPLIT and isinstance(own, (int, float)):
        text += f"\n{own:.2f}x {OWN_BASE[w]} whole"
    return text


def chart_title(doc):
    facts, args = doc.get("facts", {}), doc.get("args", {})
    names = [PEER_NAMES.get(p, p) for p in doc.get("peers", []) if p != "syncpb"]
    rounds = args.get("rounds")
    title = "syncpb" + (" vs " + ", ".join(names) if names else "")
    if rounds:
        title += f": median of {rounds} round{'s' if rounds != 1 else ''}"
    bits = []
    if facts.get("python"):
        bits.append(str(facts["python"]).split(" (")[0])
    if facts.get("nproc"):
        cpu = facts.get("cpu_model")
        bits.append(f"{facts['nproc']} CPUs" + (f" ({cpu})" if cpu and cpu != "?" else ""))
    if facts.get("platform"):
        bits.append(" ".join(str(facts["platform"]).split("-")[:2]))
    versions = facts.get("versions", {})
    for name in ("Twisted", "Pyro5", "gevent"):
        if versions.get(name) and versions[name] != "not installed":
            bits.append(f"{name} {versions[name]}")
    if doc.get("date"):
        bits.append(str(doc["date"])[:10])
    if facts.get("repo_commit") and facts["repo_commit"] != "no commit":
        bits.append(f"commit {facts['repo_commit']}")
    warn = ""
    if args.get("quick"):
        warn = "QUICK SMOKE RUN: not a measurement"
    elif rounds is not None and rounds < 3:
        warn = f"SMOKE RUN (only {rounds} round{'s' if rounds != 1 else ''}): not a measurement"
    return title, "  ·  ".join(bits), warn


def draw_chart(doc, path):
    """A grouped bar chart of ``doc`` (what ``--json`` writes) into ``path``
    (PNG): per workload the median of each peer, whiskers from the slowest to
    the fastest round, one panel per unit (calls/s; W3 in MB/s), log scale
    when the figures span more than 30x."""
    if chart_missing():
        raise ChartError(CHART_NEEDS)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError as e:  # there, but broken
        raise ChartError(f"{CHART_NEEDS}\n(import matplotlib: {e})") from e

    med = doc.get("median") or {}
    workloads = [w for w in (doc.get("workloads") or sorted(med)) if w in med]
    peers = doc.get("peers") or sorted({p for w in workloads for p in med[w]})
    if not workloads or not peers:
        raise ChartError("nothing to draw: no medians in the figures")
    units = doc.get("units") or {}
    notes = doc.get("notes") or {}
    ran = doc.get("cells")
    marks = {}
    for key in notes:
        marks[key] = "*†‡§¶"[len(marks)] if len(marks) < 5 else f"({len(marks) + 1})"

    def value(w, p):
        v = med.get(w, {}).get(p)
        return v if isinstance(v, (int, float)) and v > 0 else None

    def rounds_of(w, p):
        cs = (doc.get("cells") or {}).get(f"{w}/{p}", [])
        return [c["value"] for c in cs if isinstance(c.get("value"), (int, float))]

    panels = []  # (unit, [workloads])
    for w in workloads:
        u = units.get(w, unit_of(w))
        for unit, ws in panels:
            if unit == u:
                ws.append(w)
                break
        else:
            panels.append((u, [w]))
    # the calls/s panel first, the MB/s panel (W3) beside it
    panels.sort(key=lambda x: x[0] != "calls/s")

    spans = []
    for unit, ws in panels:
        vals = [v for w in ws for p in peers for v in [value(w, p)] + rounds_of(w, p) if v]
        spans.append(max(vals) / min(vals) if vals else 1)
    log_scale = any(sp > 30 for sp in spans)

    title, subtitle, warn = chart_title(doc)
    widths = [len(ws) + 0.6 for _, ws in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7.0, 1.3 * sum(widths) + 0.8), 6.0),
                             width_ratios=widths, layout="constrained", squeeze=False)
    axes = axes[0]
    n = len(peers)
    bar_w = 0.82 / n
    handles = {}
    whiskers = False
    for ax, (unit, ws) in zip(axes, panels):
        top = 0
        for i, p in enumerate(peers):
            color = PEER_COLORS.get(p, f"C{i}")
            for j, w in enumerate(ws):
                x = j - 0.41 + bar_w * (i + 0.5)
                v = value(w, p)
                if v is None and ran is not None and f"{w}/{p}" not in ran:
                    continue  # not run for this row (the split-delivery W2: syncpb only)
                if v is None:
                    raw = med.get(w, {}).get(p)
                    ax.text(x, 0.02, "n/a" if raw is None else str(raw),
                            transform=ax.get_xaxis_transform(), rotation=90,
                            ha="center", va="bottom", fontsize=8, color="#b00020")
                    continue
                mark = marks.get(f"{w}/{p}", "")
                bar = ax.bar(x, v, bar_w * 0.92, color=color, edgecolor="white",
                             linewidth=0.5, hatch="///" if mark else None, zorder=2)
                handles.setdefault(p, bar)
                rs = rounds_of(w, p)
                hi = v
                if len(rs) > 1:
                    whiskers = True
                    lo, hi = min(rs + [v]), max(rs + [v])
                    ax.errorbar(x, v, yerr=[[v - lo], [hi - v]], fmt="none",
                                ecolor="#333333", elinewidth=0.8, capsize=2, zorder=3)
                ax.annotate(_short(v, unit) + mark, (x, hi), xytext=(0, 3),
                            textcoords="offset points", rotation=90, ha="center",
                            va="bottom", fontsize=8,
                            fontweight="bold" if p == "syncpb" else "normal")
                top = max(top, hi)
        ax.set_xticks(range(len(ws)))
        ax.set_xticklabels([_tick_label(w, doc) for w in ws], fontsize=8.5)
        ax.set_xlim(-0.55, len(ws) - 0.45)
        ax.set_ylabel(unit + (" (log scale)" if log_scale else ""), fontsize=10)
        ax.grid(axis="y", color="#dddddd", linewidth=0.6, zorder=0)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if log_scale:
            ax.set_yscale("log")
            vals = [v for w in ws for p in peers for v in [value(w, p)] + rounds_of(w, p) if v]
            if vals:  # room above the bars for their labels (and the legend)
                lo = min(vals) / 1.6
                ax.set_ylim(lo, top * (top / lo) ** 0.25)
                if top / lo < 100:  # under two decades: ticks at 1, 2, 5 x 10^n
                    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
                ax.yaxis.set_major_formatter(ticker.FuncFormatter(_axis_tick))
                ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        elif top:
            ax.set_ylim(0, top * 1.4)
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(
                lambda v, _pos, big=top >= 100: f"{v:,.0f}" if big else f"{v:g}"))
        ax.tick_params(axis="y", labelsize=9)
    axes[0].legend([handles[p] for p in peers if p in handles],
                   [PEER_NAMES.get(p, p) for p in peers if p in handles],
                   loc="upper left", ncol=min(len(handles), 4), fontsize=9,
                   frameon=False, handlelength=1.2, columnspacing=1.2)
    fig.suptitle(title + (f"\n{warn}" if warn else ""), fontsize=12, fontweight="bold",
                 color="#b00020" if warn else "black")
    # the machine line over the first panel, wrapped to that panel's width
    room = int((fig.get_figwidth() * widths[0] / sum(widths) - 0.6) * 72 / (8.5 * 0.56))
    lines, line = [], ""
    for bit in subtitle.split("  ·  "):
        if line and len(line) + 5 + len(bit) > room:
            lines.append(line)
            line = bit
        else:
            line = f"{line}  ·  {bit}" if line else bit
    lines.append(line)
    axes[0].set_title("\n".join(lines), fontsize=8.5, color="#444444", loc="left")
    foot = [f"{marks[k]} {text}." for k, text in notes.items()
            if k in marks and value(*k.split("/", 1)) is not None]
    if foot:
        foot.insert(0, "Hatched bars are not like for like:")
    if any(isinstance((doc.get("ratios") or {}).get(w, {}).get("twisted"), (int, float))
           or isinstance(ratio(med.get(w, {}).get("syncpb"), med.get(w, {}).get("twisted")),
                         float) for w in workloads):
        foot.append("Under each workload: syncpb's figure over Twisted PB's.")
    if whiskers:
        foot.append("Bars: median over rounds; whiskers: slowest to fastest round. "
                    "Higher is better.")
    else:
        foot.append("Higher is better.")
    fig.supxlabel("\n".join(foot), fontsize=8.5, color="#333333")
    fig.savefig(path, dpi=130, metadata={"Software": None})
    plt.close(fig)
    return path


def load_figures(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ChartError(f"cannot read figures from {path}: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("median"), dict):
        raise ChartError(f"{path}: not a run.py --json file (no \"median\")")
    return doc


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
    ap.add_argument("--client-cpu", type=int, default=None, metavar="CPU",
                    help="pin single-client workloads' clients to this CPU instead of "
                         "--cpu (server and client each on a CPU of its own)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin anything")
    ap.add_argument("--clients", type=int, default=8, help="W4 client processes")
    ap.add_argument("--inflight", type=int, default=64, help="W5 calls in flight")
    ap.add_argument("--threads", type=int, default=16, help="W6 threads")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-call safety timeout")
    ap.add_argument("--pyro5-w5", choices=("batch", "threads"), default="batch",
                    help="Pyro5's W5: BatchProxy of N calls, or N threads with own proxies")
    ap.add_argument("--syncpb-path", metavar="DIR", default=REPO,
                    help="directory to import syncpb from (default: this work tree)")
    ap.add_argument("--json", metavar="PATH",
                    help="also write all raw results as JSON (--chart-from reads it)")
    ap.add_argument("--chart", metavar="PNG",
                    help="also draw a bar chart of the medians into PNG (needs matplotlib: "
                         "pip install -e '.[bench]')")
    ap.add_argument("--chart-from", metavar="JSON",
                    help="run nothing: draw --chart from the figures a --json run saved")
    ap.add_argument("--segment", type=int, default=1460, metavar="BYTES",
                    help="also run syncpb's W2 with every read of both processes capped "
                         "at BYTES, as in TCP segments (default 1460; 0: off)")
    args = ap.parse_args(argv)
    if args.chart_from and not args.chart:
        ap.error("--chart-from JSON needs --chart PNG")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.seconds is None:
        args.seconds = 0.5 if args.quick else 2.0
    if args.warmup is None:
        args.warmup = 0.1 if args.quick else 0.3
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        ap.error("--rounds >= 1, --seconds > 0, --warmup >= 0")
    if args.segment < 0:
        ap.error("--segment >= 0")
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
    if args.chart:
        missing = chart_missing()
        if missing:  # say so now, not after a long run
            log(missing)
            return 2
    if args.chart_from:
        try:
            log(f"chart: {draw_chart(load_figures(args.chart_from), args.chart)}")
        except ChartError as e:
            log(str(e))
            return 2
        return 0
    cmdline = " ".join(shlex.quote(a) for a in [sys.executable, sys.argv[0]] + argv)
    env = child_env(os.path.abspath(args.syncpb_path))
    facts = machine_facts(args)
    facts["date"] = datetime.now().astimezone().isoformat(timespec="seconds")

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
    per_round = len(round_cells(args, peers))
    total = args.rounds * per_round
    index = 0
    log(f"{total} cells: {args.rounds} round(s) x {len(args.workloads)} workload(s) "
        f"x {len(peers)} peer(s)"
        + (f" + syncpb's W2 in {args.segment:,}-byte segments" if split_on(args, peers) else "")
        + f", {args.seconds:g} s measured each")
    for r in range(args.rounds):
        k = r % len(peers)
        order = peers[k:] + peers[:k]
        for w, p in round_cells(args, order):
            index += 1
            log(progress_line(index, total, w, p, r + 1, args.rounds))
            t0 = time.monotonic()
            res = run_cell(p, w, args, env)
            res["round"] = r + 1
            cells.setdefault((w, p), []).append(res)
            now = time.monotonic()
            log(progress_line(index, total, w, p, r + 1, args.rounds, res,
                              now - t0, now - t_start))
    log(f"total {time.monotonic() - t_start:.0f} s")

    med, checks = report(args, facts, peers, unavailable, rows_of(args, peers), cells, cmdline)
    doc = results_doc(args, facts, peers, unavailable, cells, med, checks, cmdline)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        log(f"figures: {args.json}")
    if args.chart:
        try:
            log(f"chart: {draw_chart(json.loads(json.dumps(doc, default=str)), args.chart)}")
        except ChartError as e:
            log(str(e))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
