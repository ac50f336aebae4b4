#!/usr/bin/env python3
"""Responsiveness benchmark: does a syncpb server keep answering while its
methods block, and what does the database pool cost?

    .venv/bin/python benchmarks/responsiveness.py              # full run (~1 min)
    .venv/bin/python benchmarks/responsiveness.py --quick      # smoke run (< 20 s)
    .venv/bin/python benchmarks/responsiveness.py --json out.json > report.md

Part A (hub responsiveness). For each kind of blocking call the driver starts
a fresh server process (``responsiveness.py server``: a ``syncpb.Server`` with
``pool=adapters.ThreadPool(16)``, never monkey-patched), opens 8 "worker"
connections that make back-to-back 200 ms blocking calls of that kind, each
from its own thread, and one more connection that pings in a loop, timing
each round trip with ``time.perf_counter``. Kinds:

* ``sleep_pooled``: ``@adapters.blocking`` method doing ``time.sleep(s)`` (pool);
* ``sleep_inline``: ``time.sleep(s)`` in the hub thread (freezes the hub);
* ``pg_pooled``: ``ConnectionPool("psycopg", ..., cp_max=8).run_query(
  "select pg_sleep(%s)")`` from the call's greenlet (blocks only the greenlet);
* ``pg_inline``: the same query on a plain psycopg connection in the hub
  thread (freezes the hub).

The ``*_inline`` rows are the "without the pool" anchors.

Part B (throughput). A one-row ``SELECT`` from 1 and 8 OS threads: on a plain
DB-API connection per thread (no pool), through ``ConnectionPool.run_query``
in-process, and through PB (a remote method calling ``run_query`` in the
server), for sqlite3 (a file in a temporary directory) and PostgreSQL.

PostgreSQL is a private, throwaway server started by this script
(``tests/pgserver.py``) and stopped at the end; without PostgreSQL or psycopg
the PostgreSQL rows are skipped, saying why. All traffic goes to 127.0.0.1.
Every loop is bounded by a count and a time; the driver stops only the
processes it started, by their PID.

Progress goes to stderr; the Markdown report goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TESTS = os.path.join(REPO, "tests")
SCRIPT = os.path.abspath(__file__)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
import run  # noqa: E402  (the benchmark driver's child-process helper)

perf = time.perf_counter
HOST = "127.0.0.1"

SELECT_SQL = "select v from one_row"
PING_TARGET_MS = 10.0
WORKERS = 8
SERVER_POOL = 16
DB_POOL = 8

#: Part A rows, in run order: (kind, remote method, needs PostgreSQL, where it blocks)
KINDS = [
    ("idle", None, False, "no blocking calls (floor)"),
    ("sleep_pooled", "sleep_pooled", False, "`@adapters.blocking` `time.sleep`: server ThreadPool(16)"),
    ("sleep_inline", "sleep_inline", False, "`time.sleep` in the hub thread (anchor)"),
    ("pg_pooled", "pg_pooled", True, "`ConnectionPool.run_query(pg_sleep)`: greenlet waits, pool thread blocks"),
    ("pg_inline", "pg_inline", True, "psycopg `pg_sleep` in the hub thread (anchor)"),
]


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# ================================================================ server side

def serve(args):
    """``responsiveness.py server``: print ``ADDR``/``INFO``, serve until a
    ``STOP`` line or EOF on stdin (or the SIGALRM lifetime)."""
    signal.alarm(int(args.lifetime))
    import syncpb
    from syncpb import adapters

    pg_conninfo, sqlite_path = args.pg, args.sqlite

    class Bench(syncpb.Root):
        def __init__(self):
            self.db = (adapters.ConnectionPool("psycopg", pg_conninfo, cp_min=DB_POOL,
                                               cp_max=DB_POOL, cp_name="bench-pg")
                       if pg_conninfo else None)
            self.lite = (adapters.ConnectionPool("sqlite3", sqlite_path, cp_min=DB_POOL,
                                                 cp_max=DB_POOL, cp_name="bench-sqlite")
                         if sqlite_path else None)
            self.inline_conn = None

        def remote_ping(self):
            return 1

        @adapters.blocking
        def remote_sleep_pooled(self, s):
            time.sleep(s)
            return s

        def remote_sleep_inline(self, s):
            time.sleep(s)  # not monkey-patched: the whole hub sleeps
            return s

        def remote_pg_pooled(self, s):
            return len(self.db.run_query("select pg_sleep(%s)", (s,)))

        def remote_pg_inline(self, s):
            if self.inline_conn is None:  # opened in the hub thread, on first use
                import psycopg
                self.inline_conn = psycopg.connect(pg_conninfo, autocommit=True,
                                                   connect_timeout=10)
            with self.inline_conn.cursor() as cur:
                cur.execute("select pg_sleep(%s)", (s,))
                return len(cur.fetchall())

        def remote_pg_select(self):
            return self.db.run_query(SELECT_SQL)[0][0]

        def remote_sqlite_select(self):
            return self.lite.run_query(SELECT_SQL)[0][0]

        def close(self):
            for pool in (self.db, self.lite):
                if pool is not None:
                    pool.close(5)
            if self.inline_conn is not None:
                self.inline_conn.close()

    root = Bench()
    server = syncpb.Server(root, pool=adapters.ThreadPool(SERVER_POOL, name="bench-server"))
    addr = server.listen(f"tcp://{HOST}:0")
    server.start()
    import gevent.monkey
    info = {"pid": os.getpid(), "server_pool": SERVER_POOL, "db_pool": DB_POOL,
            "monkey_patched": sorted(m for m in ("time", "socket", "select", "thread")
                                     if gevent.monkey.is_module_patched(m))}
    sys.stdout.write(f"ADDR {addr}\nINFO {json.dumps(info)}\n")
    sys.stdout.flush()
    try:
        for line in sys.stdin:
            if line.strip() == "STOP":
                break
    finally:
        server.stop(5)
        root.close()
    sys.stdout.write("STOPPED\n")
    sys.stdout.flush()
    return 0


# ================================================================ processes

class Proc(run.Proc):
    """A server child (``run.Proc``) that is first asked to stop politely
    (``STOP`` on its stdin), so it can stop its pools and close its
    database connections; then SIGTERM, then SIGKILL, this PID only."""

    def __init__(self, argv, env, name):
        super().__init__(argv, env, name)

    def stop(self, grace=10.0):
        if self.p.poll() is None:
            try:
                os.write(self.p.stdin.fileno(), b"STOP\n")
                self.p.wait(timeout=grace)
            except (OSError, subprocess.TimeoutExpired):
                pass
        super().stop()


ProcError = run.ProcError


def child_env():
    env = run.child_env(REPO)
    env.pop("PYTHONSTARTUP", None)
    return env


def start_server(args, pg=None, sqlite_path=None, name="server"):
    argv = [sys.executable, SCRIPT, "server", "--lifetime", str(int(args.lifetime))]
    if pg:
        argv += ["--pg", pg]
    if sqlite_path:
        argv += ["--sqlite", sqlite_path]
    proc = Proc(argv, child_env(), name)
    try:
        addr = proc.expect("ADDR", time.monotonic() + 60)
        info = json.loads(proc.expect("INFO", time.monotonic() + 10))
    except BaseException:
        proc.close()
        raise
    return proc, addr, info


# ================================================================ statistics

def pct(sorted_vals, q):
    """Nearest-rank percentile of a sorted list (None when empty)."""
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[k]


def ms(v):
    return None if v is None else v * 1000.0


# ================================================================ part A

def run_kind(kind, method, args, pg_conninfo):
    """One Part A row: fresh server, 8 workers + 1 pinger, summary dict."""
    import syncpb

    n_workers = 0 if method is None else WORKERS
    call_s = args.call_ms / 1000.0
    timeout = args.call_timeout
    proc, addr, info = start_server(args, pg=pg_conninfo, name=f"{kind} server")
    conns = []
    try:
        def connect():
            c = syncpb.connect(addr, timeout=10, call_timeout=timeout)
            conns.append(c)
            return c

        ping_conn = connect()
        worker_conns = [connect() for _ in range(n_workers)]
        for _ in range(args.warm_pings):  # warm the ping path
            if ping_conn.root.ping() != 1:
                raise RuntimeError("ping answered wrong")

        start = [0.0]
        barrier = threading.Barrier(n_workers + 1, action=lambda: start.__setitem__(0, perf()))
        done_lock = threading.Lock()
        remaining = [n_workers]
        all_done = threading.Event()
        if n_workers == 0:
            all_done.set()
        durations = [[] for _ in range(n_workers)]
        errors = []

        def worker(k):
            root = worker_conns[k].root
            try:
                # warm-up: one short call (starts pool threads, opens DB connections)
                root.callRemote(method, 0.01).result(timeout=timeout)
                barrier.wait(timeout=60)
                end = start[0] + args.seconds
                calls = 0
                while calls < args.calls and perf() < end:
                    t = perf()
                    root.callRemote(method, call_s).result(timeout=timeout)
                    durations[k].append(perf() - t)
                    calls += 1
            except BaseException as e:  # noqa: BLE001 - reported in the table
                errors.append(f"worker {k}: {type(e).__name__}: {e}")
                barrier.abort()
            finally:
                with done_lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        all_done.set()

        threads = [threading.Thread(target=worker, args=(k,), daemon=True,
                                    name=f"worker-{k}") for k in range(n_workers)]
        for t in threads:
            t.start()
        lat = []
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            errors.append("a worker failed before the measured phase")
        else:
            root = ping_conn.root
            t0 = start[0]
            # pings run while the workers are busy (idle row: for --seconds);
            # bounded by a count and by a hard time limit
            hard_end = t0 + args.seconds + n_workers * call_s * 2 + 10
            idle_end = t0 + args.seconds
            while len(lat) < args.max_pings:
                now = perf()
                if now >= hard_end or (n_workers and all_done.is_set()) \
                        or (not n_workers and now >= idle_end):
                    break
                t = perf()
                if root.ping() != 1:
                    raise RuntimeError("ping answered wrong")
                lat.append(perf() - t)
        phase = perf() - start[0] if start[0] else 0.0
        for t in threads:
            t.join(timeout=n_workers * call_s * 2 + timeout)
        if any(t.is_alive() for t in threads):
            errors.append("a worker thread did not finish in time")
    finally:
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        proc.close()

    lat.sort()
    all_d = sorted(d for ds in durations for d in ds)
    return {
        "kind": kind, "method": method, "server": info, "workers": n_workers,
        "pings": len(lat), "phase_s": phase,
        "ping_ms": {"min": ms(pct(lat, 0)), "median": ms(pct(lat, 0.5)),
                    "p90": ms(pct(lat, 0.9)), "p99": ms(pct(lat, 0.99)),
                    "max": ms(lat[-1] if lat else None)},
        "calls": len(all_d),
        "calls_per_s": (len(all_d) / phase) if phase > 0 else None,
        "call_ms_median": ms(pct(all_d, 0.5)),
        "errors": errors,
    }


# ================================================================ part B

def timed_threads(n, make_step, args):
    """Run ``step()`` from ``n`` threads: warm-up (``--warmup`` s), then all
    start together and each counts calls for ``--db-seconds`` (or
    ``--max-count`` calls). Returns (calls, elapsed, errors)."""
    start = [0.0]
    barrier = threading.Barrier(n + 1, action=lambda: start.__setitem__(0, perf()))
    counts = [0] * n
    ends = [0.0] * n
    errors = []

    def run(k):
        try:
            step, cleanup = make_step()
            try:
                warm_end = perf() + args.warmup
                i = 0
                while perf() < warm_end and i < 100_000:
                    if step() != 1:
                        raise RuntimeError("wrong answer")
                    i += 1
                barrier.wait(timeout=60)
                end = start[0] + args.db_seconds
                c = 0
                while c < args.max_count and perf() < end:
                    step()
                    c += 1
                counts[k] = c
                ends[k] = perf()
            finally:
                cleanup()
        except BaseException as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
            barrier.abort()

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(n)]
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join(timeout=args.warmup + args.db_seconds + 60)
    if any(t.is_alive() for t in threads):
        errors.append("a thread did not finish in time")
    elapsed = max(ends) - start[0] if start[0] and max(ends) else 0.0
    return sum(counts), elapsed, errors


def cell(n, make_step, args, label):
    calls, elapsed, errors = timed_threads(n, make_step, args)
    rate = calls / elapsed if elapsed > 0 and not errors else None
    log(f"B {label} x{n}: " + (f"{rate:,.0f} calls/s" if rate else f"ERROR {errors[:1]}"))
    return {"clients": n, "calls": calls, "elapsed": elapsed, "calls_per_s": rate,
            "errors": errors}


def part_b(args, dbs, pb_addr):
    """dbs: {name: (dbapi module name, connect args, remote method)}."""
    from syncpb import adapters
    import syncpb

    out = {}
    for db, (modname, connargs, remote) in dbs.items():
        mod = __import__(modname)

        def direct():
            conn = mod.connect(*connargs)

            def step():
                cur = conn.cursor()
                cur.execute(SELECT_SQL)
                rows = cur.fetchall()
                cur.close()
                conn.commit()
                return rows[0][0]
            return step, conn.close

        pool = adapters.ConnectionPool(modname, *connargs, cp_min=DB_POOL, cp_max=DB_POOL,
                                       cp_name=f"bench-{db}")

        def pooled():
            return (lambda: pool.run_query(SELECT_SQL)[0][0]), (lambda: None)

        def via_pb():
            conn = syncpb.connect(pb_addr, timeout=10, call_timeout=args.call_timeout)
            root = conn.root
            return (lambda: root.callRemote(remote).result(timeout=args.call_timeout)), conn.close

        try:
            for n in (1, WORKERS):
                row = out.setdefault(db, {}).setdefault(n, {})
                row["direct"] = cell(n, direct, args, f"{db} direct")
                row["pool"] = cell(n, pooled, args, f"{db} pool")
                if pb_addr is not None:
                    row["pb"] = cell(n, via_pb, args, f"{db} PB")
        finally:
            pool.close(10)
    return out


# ================================================================ PostgreSQL

class PG:
    """The private PostgreSQL server, or why there is none."""

    def __init__(self):
        self.server = None
        self.conninfo = None
        self.why_not = None
        self.version = None
        self.port = None
        self.bin_dir = None

    def start(self):
        try:
            sys.path.insert(0, TESTS)
            import pgserver
        except Exception as e:  # noqa: BLE001 - e.g. pytest missing
            self.why_not = f"tests/pgserver.py could not be imported ({type(e).__name__}: {e})"
            return
        missing = pgserver.missing_requirements()
        if missing:
            self.why_not = "missing " + "; ".join(missing)
            return
        try:
            self.server = pgserver.PostgresServer()
            self.port, self.bin_dir = self.server.port, self.server.bin_dir
            log(f"starting a private PostgreSQL in {self.server.base_dir} ...")
            self.server.start()
            self.conninfo = self.server.create_database("syncpb_bench")
            import psycopg
            with psycopg.connect(self.conninfo, connect_timeout=10) as conn:
                conn.execute("create table one_row (id integer primary key, v integer)")
                conn.execute("insert into one_row values (1, 1)")
                self.version = conn.execute("show server_version").fetchone()[0]
        except Exception as e:  # noqa: BLE001
            self.why_not = f"could not start PostgreSQL: {type(e).__name__}: {str(e)[:800]}"
            self.conninfo = None

    def stop(self):
        if self.server is not None:
            log("stopping the private PostgreSQL")
            try:
                self.server.cleanup()
            except Exception as e:  # noqa: BLE001
                log(f"PostgreSQL cleanup failed: {e}")
            self.server = None


# ================================================================ report

def machine_facts():
    """``run.machine_facts`` (python, platform, CPU, commit), with this
    benchmark's packages, SQLite and uncommitted changes noted."""
    facts = run.machine_facts(None)
    for key in ("driver_affinity", "loadavg_start", "taskset"):
        facts.pop(key, None)
    try:
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    if dirty:
        facts["repo_commit"] += " + uncommitted changes"
    facts["versions"] = {n: run.pkg_version(n)
                         for n in ("syncpb", "gevent", "psycopg", "psycopg-binary")}
    facts["sqlite"] = sqlite3.sqlite_version
    return facts


def f1(v):
    return "n/a" if v is None else f"{v:,.1f}"


def f2(v):
    return "n/a" if v is None else f"{v:,.2f}"


def fr(v):
    return "n/a" if v is None else f"{v:,.0f}"


def report(args, cmdline, facts, load_start, rows_a, skipped_a, res_b, skipped_b, pg, elapsed):
    P = print
    P("# syncpb responsiveness benchmark")
    P()
    if args.quick:
        P("**QUICK SMOKE RUN**: tiny numbers; they only show that the harness works, "
          "they are not a measurement.")
        P()
    P(f"Command: `{cmdline}`")
    P()
    P(f"Load average at start: {', '.join(f'{x:.2f}' for x in load_start)}; "
      f"at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
      f"(1, 5, 15 min). Wall time: {elapsed:.1f} s.")
    P()
    if pg.conninfo:
        P(f"PostgreSQL: private throwaway server {pg.version} on 127.0.0.1:{pg.port} "
          f"(started and stopped by this run; fsync off).")
    else:
        P(f"PostgreSQL: **skipped** ({pg.why_not}).")
    P()

    if rows_a is not None:
        P("## A. Hub responsiveness while methods block")
        P()
        P(f"Per row: a fresh server process (`Server(root, pool=adapters.ThreadPool({SERVER_POOL}))`, "
          f"not monkey-patched; PostgreSQL pool `ConnectionPool(\"psycopg\", cp_min={DB_POOL}, "
          f"cp_max={DB_POOL})`). {WORKERS} worker connections, one OS thread each, make "
          f"back-to-back {args.call_ms:g} ms blocking calls for {args.seconds:g} s or "
          f"{args.calls} calls each, whichever comes first (a call already made is "
          f"waited for). One more connection pings back to back while any worker is "
          f"still busy (at most {args.max_pings:,} pings); each ping's round trip is "
          f"timed with `time.perf_counter`. The idle row pings for {args.seconds:g} s "
          f"with no workers. Clients run in the driver process (threaded syncpb client). "
          f"p99 is nearest-rank: with few pings it is the maximum.")
        P()
        patched = sorted({m for r in rows_a for m in r["server"].get("monkey_patched", [])})
        P("Server processes monkey-patched by gevent: "
          + (", ".join(patched) if patched else "nothing (checked in each server)") + ".")
        P()
        P(f"Target: p99 ping under {PING_TARGET_MS:g} ms with the pool; the inline rows "
          f"are the anchors (no pool: the hub freezes for each call).")
        P()
        P("| blocking calls | where they block | pings | median ms | p90 ms | p99 ms | max ms "
          "| blocking calls done | blocking calls/s | median call ms | target | status |")
        P("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for r in rows_a:
            pm = r["ping_ms"]
            if r["kind"].endswith("_pooled"):
                target = f"p99 < {PING_TARGET_MS:g} ms"
                status = ("ERR" if r["errors"] or pm["p99"] is None else
                          "met" if pm["p99"] < PING_TARGET_MS else "MISSED")
            elif r["kind"].endswith("_inline"):
                target = "anchor: freezes"
                status = "ERR" if r["errors"] else (
                    "froze" if (pm["p99"] or 0) >= PING_TARGET_MS else "did not freeze")
            else:
                target, status = "floor", "ERR" if r["errors"] else ""
            where = next(w for k, _, _, w in KINDS if k == r["kind"])
            calls = "" if not r["workers"] else str(r["calls"])
            cps = "" if not r["workers"] else f1(r["calls_per_s"])
            cms = "" if not r["workers"] else f1(r["call_ms_median"])
            P(f"| {r['kind']} | {where} | {r['pings']:,} | {f2(pm['median'])} | {f2(pm['p90'])} "
              f"| {f2(pm['p99'])} | {f1(pm['max'])} | {calls} | {cps} | {cms} | {target} "
              f"| {status} |")
        for kind, why in skipped_a:
            P(f"| {kind} | skipped: {why} | | | | | | | | | | |")
        P()
        P(f"With the pool, {WORKERS} calls of {args.call_ms:g} ms overlap (about "
          f"{WORKERS * 1000 / args.call_ms:g} calls/s, each taking about {args.call_ms:g} ms); "
          f"inline, they queue behind each other in the frozen hub (about "
          f"{1000 / args.call_ms:g} calls/s, each waiting up to {WORKERS} x {args.call_ms:g} ms).")
        P()
        errs = [(r["kind"], e) for r in rows_a for e in r["errors"]]
        if errs:
            P("Errors:")
            P()
            for k, e in errs:
                P(f"- {k}: {e}")
            P()

    if res_b is not None:
        P("## B. One-row SELECT throughput")
        P()
        P(f"`{SELECT_SQL}` on a table holding one row; calls/s summed over the clients, "
          f"measured for {args.db_seconds:g} s after a {args.warmup:g} s warm-up "
          f"(or {args.max_count:,} calls per client). Clients are OS threads of the "
          f"driver process (not greenlets, not monkey-patched). Columns:")
        P()
        P("- **direct**: one plain DB-API connection per thread, no pool: the same "
          "`execute`, `fetchall`, `commit` per call (the floor);")
        P(f"- **pool in-process**: `ConnectionPool(module, ..., cp_min={DB_POOL}, "
          f"cp_max={DB_POOL}).run_query(...)` called from each thread;")
        P(f"- **via PB**: each thread has its own syncpb connection and calls a remote "
          f"method that runs `self.db.run_query(...)` in its greenlet on the server "
          f"(one server process, pools of {DB_POOL}).")
        P()
        P("sqlite3: a database file in a temporary directory. PostgreSQL: the private "
          "server, over TCP to 127.0.0.1.")
        P()
        P("| database | client threads | direct calls/s | pool in-process calls/s "
          "| via PB calls/s | pool / direct | PB / pool |")
        P("|---|---:|---:|---:|---:|---:|---:|")
        errs = []
        for db, by_n in res_b.items():
            for n, row in by_n.items():
                d = row["direct"]["calls_per_s"]
                p = row["pool"]["calls_per_s"]
                b = row.get("pb", {}).get("calls_per_s")
                ratio_pd = f"{p / d:.2f}x" if p and d else "n/a"
                ratio_bp = f"{b / p:.2f}x" if b and p else "n/a"
                P(f"| {db} | {n} | {fr(d)} | {fr(p)} | {fr(b)} | {ratio_pd} | {ratio_bp} |")
                errs += [(db, n, way, e) for way, c in row.items() for e in c["errors"]]
        for db, why in skipped_b:
            P(f"| {db} | skipped: {why} | | | | | |")
        P()
        if errs:
            P("Errors:")
            P()
            for db, n, way, e in errs:
                P(f"- {db} x{n} {way}: {e}")
            P()

    run.print_machine(P, facts)
    if pg.version:
        P(f"- postgresql: {pg.version} ({pg.bin_dir})")


# ================================================================ main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    sp = sub.add_parser("server", help="(internal) run the benchmark server")
    sp.add_argument("--pg", help="psycopg conninfo of the PostgreSQL database")
    sp.add_argument("--sqlite", help="path of the sqlite3 database file")
    sp.add_argument("--lifetime", type=float, default=600, help="SIGALRM lifetime")

    ap.add_argument("--quick", action="store_true", help="smoke run: tiny numbers (< 20 s)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="Part A: length of the blocking-call phase (default 3; --quick 0.4)")
    ap.add_argument("--calls", type=int, default=None,
                    help="Part A: most blocking calls per worker (default 15; --quick 2)")
    ap.add_argument("--call-ms", type=float, default=200.0,
                    help="Part A: duration of each blocking call in ms (default 200)")
    ap.add_argument("--max-pings", type=int, default=None,
                    help="Part A: most pings per row (default 200,000; --quick 20,000)")
    ap.add_argument("--db-seconds", type=float, default=None,
                    help="Part B: measured phase per cell (default 2; --quick 0.2)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="Part B: warm-up per client before the measured phase "
                         "(default 0.3; --quick 0.05)")
    ap.add_argument("--max-count", type=int, default=5_000_000,
                    help="Part B: call-count bound per client")
    ap.add_argument("--parts", default="A,B", help="which parts: A, B or A,B")
    ap.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL rows")
    ap.add_argument("--call-timeout", type=float, default=60.0, help="per-call safety timeout")
    ap.add_argument("--json", metavar="PATH", help="also write every result as JSON")
    args = ap.parse_args(argv)
    if args.cmd == "server":
        return args
    q = args.quick
    for name, full, quick in (("seconds", 3.0, 0.4), ("calls", 15, 2),
                              ("max_pings", 200_000, 20_000), ("db_seconds", 2.0, 0.2),
                              ("warmup", 0.3, 0.05)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    args.warm_pings = 20 if q else 200
    args.parts = {p.strip().upper() for p in args.parts.split(",") if p.strip()}
    if not args.parts <= {"A", "B"} or not args.parts:
        ap.error("--parts takes A, B or A,B")
    if args.seconds <= 0 or args.db_seconds <= 0 or args.calls < 1 or args.call_ms <= 0 \
            or args.max_pings < 1 or args.warmup < 0:
        ap.error("--seconds, --db-seconds, --call-ms > 0; --calls, --max-pings >= 1")
    # every server child dies on its own after this long, even if we crash
    args.lifetime = (args.seconds + WORKERS * args.call_ms / 1000 * args.calls + 300)
    return args


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.cmd == "server":
        return serve(args)
    signal.signal(signal.SIGTERM, _terminate)  # so the finally blocks stop our children
    cmdline = " ".join(shlex.quote(a) for a in [sys.executable, sys.argv[0]] + argv)
    load_start = os.getloadavg()
    facts = machine_facts()
    t_start = time.monotonic()

    pg = PG()
    tmpdir = tempfile.mkdtemp(prefix="syncpb-resp-")
    sqlite_path = os.path.join(tmpdir, "bench.sqlite3")
    rows_a = skipped_a = res_b = skipped_b = None
    pb_proc = None
    try:
        if args.no_pg:
            pg.why_not = "--no-pg"
        else:
            pg.start()
        if pg.why_not:
            log(f"PostgreSQL rows skipped: {pg.why_not}")

        if "A" in args.parts:
            rows_a, skipped_a = [], []
            for kind, method, needs_pg, _ in KINDS:
                if needs_pg and not pg.conninfo:
                    skipped_a.append((kind, pg.why_not))
                    continue
                t0 = time.monotonic()
                r = run_kind(kind, method, args, pg.conninfo)
                rows_a.append(r)
                pm = r["ping_ms"]
                log(f"A {kind}: {r['pings']} pings, median {f2(pm['median'])} ms, "
                    f"p99 {f2(pm['p99'])} ms, {r['calls']} blocking calls "
                    f"({time.monotonic() - t0:.1f} s)"
                    + (f" ERRORS {r['errors']}" if r["errors"] else ""))

        if "B" in args.parts:
            with sqlite3.connect(sqlite_path) as conn:
                conn.execute("create table one_row (id integer primary key, v integer)")
                conn.execute("insert into one_row values (1, 1)")
            conn.close()
            dbs = {"sqlite3": ("sqlite3", (sqlite_path,), "sqlite_select")}
            skipped_b = []
            if pg.conninfo:
                dbs["postgresql"] = ("psycopg", (pg.conninfo,), "pg_select")
            else:
                skipped_b.append(("postgresql", pg.why_not))
            pb_proc, pb_addr, _ = start_server(args, pg=pg.conninfo, sqlite_path=sqlite_path,
                                               name="part B server")
            res_b = part_b(args, dbs, pb_addr)
    finally:
        if pb_proc is not None:
            pb_proc.close()
        pg.stop()
        try:
            for name in os.listdir(tmpdir):
                os.unlink(os.path.join(tmpdir, name))
            os.rmdir(tmpdir)
        except OSError:
            pass

    elapsed = time.monotonic() - t_start
    log(f"total {elapsed:.1f} s")
    report(args, cmdline, facts, load_start, rows_a, skipped_a or [], res_b,
           skipped_b or [], pg, elapsed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": cmdline, "facts": facts, "args": {
                k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
                "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
                "postgresql": {"version": pg.version, "skipped": pg.why_not},
                "part_a": rows_a, "part_a_skipped": skipped_a,
                "part_b": res_b, "part_b_skipped": skipped_b,
                "elapsed_s": elapsed}, f, indent=1, default=str)
    failed = any(r["errors"] for r in rows_a or []) or any(
        c["errors"] for by_n in (res_b or {}).values() for row in by_n.values()
        for c in row.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
