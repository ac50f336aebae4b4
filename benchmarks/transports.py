#!/usr/bin/env python3
"""Transports benchmark: syncpb and Twisted PB over TCP, a unix socket, TLS
over TCP and TLS over a unix socket, in one run.

    .venv/bin/python benchmarks/transports.py                 # 3 rounds x 2 s (~5 min)
    .venv/bin/python benchmarks/transports.py --quick         # smoke run (< 40 s)
    .venv/bin/python benchmarks/transports.py --workloads W1 --transports tcp,tls
    .venv/bin/python benchmarks/transports.py --json tr.json > tr.md

Workloads are ``run.py``'s W1 (sequential ``add(i, 1)``), W2 (sequential
echo of 100 records) and W3 (sequential echo of 256 KiB). For each (round,
workload, transport, peer) the driver starts a fresh server process
(``transports.py server``), reads its ``ADDR`` line, starts one client
process (``transports.py client``), waits for ``READY``, sends ``GO``,
collects ``RESULT`` and stops the server by its PID -- ``run.py``'s ``Proc``
does all of this. Server and client are pinned to one CPU (``--cpu``, as
``run.py`` pins W1-W3). The peer order and the transport order rotate each
round; the tables show the median over rounds.

TCP goes to 127.0.0.1; unix sockets live in a private temporary directory,
which also holds the TLS development set (``syncpb.tls.write_dev_set(dir,
["localhost", "127.0.0.1"])``) and is removed at the end. The TLS ceiling
comes from ``openssl speed -evp aes-128-gcm -bytes 16384 -seconds 1`` (and
aes-256-gcm, which TLS 1.3 negotiates by default), pinned to the same CPU.

Progress goes to stderr; the Markdown report goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import util

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCRIPT = os.path.abspath(__file__)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from peers import common  # noqa: E402

ALL_PEERS = ["syncpb", "twisted"]
ALL_WORKLOADS = ["W1", "W2", "W3"]
ALL_TRANSPORTS = ["tcp", "unix", "tls", "tls+unix"]
LABEL = {"W1": "W1: sequential add(i, 1)",
         "W2": "W2: sequential echo of 100 records",
         "W3": "W3: sequential echo of 256 KiB"}

# (workload, transport, against: "tcp" = syncpb's own TCP figure, "twisted" =
#  Twisted PB over the same transport, factor)
TARGETS = [("W1", "unix", "tcp", 1.0)]
TARGETS += [("W1", t, "tcp", 0.7) for t in ("tls", "tls+unix")]
TARGETS += [("W3", t, "tcp", 0.3) for t in ("tls", "tls+unix")]
TARGETS += [(w, t, "twisted", 3.0) for w in ("W1", "W3") for t in ALL_TRANSPORTS]


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# ================================================================ children

def child_main(argv):
    """``transports.py server PEER TRANSPORT ...`` / ``client PEER WORKLOAD ADDR ...``"""
    ap = argparse.ArgumentParser(prog="transports.py (child)")
    sub = ap.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("peer", choices=ALL_PEERS)
    s.add_argument("transport", choices=ALL_TRANSPORTS)
    s.add_argument("--sockdir", required=True)
    s.add_argument("--certs", required=True)
    s.add_argument("--lifetime", type=float, default=600.0)
    c = sub.add_parser("client")
    c.add_argument("peer", choices=ALL_PEERS)
    c.add_argument("workload", choices=ALL_WORKLOADS)
    c.add_argument("addr")
    c.add_argument("--certs", required=True)
    c.add_argument("--seconds", type=float, default=2.0)
    c.add_argument("--warmup", type=float, default=0.3)
    c.add_argument("--max-count", type=int, default=5_000_000)
    c.add_argument("--timeout", type=float, default=30.0)
    c.add_argument("--lifetime", type=float, default=600.0)
    args = ap.parse_args(argv)

    # Hard bound on this process's life, whatever happens to the driver.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(1, int(args.lifetime)))

    from peers import transport_peer
    if args.role == "server":
        transport_peer.SERVERS[args.peer](args.transport, common.HOST, args.sockdir, args.certs)
        return 0
    opts = common.Options(seconds=args.seconds, warmup=args.warmup, max_count=args.max_count,
                          timeout=args.timeout)
    try:
        res = transport_peer.CLIENTS[args.peer](args.workload, args.addr, opts, args.certs)
    except BaseException as e:  # noqa: BLE001 - reported to the driver
        import traceback
        traceback.print_exc()
        common.emit("ERROR", {"error": f"{type(e).__name__}: {e}"})
        sys.stdout.flush()
        os._exit(1)
    common.emit("RESULT", res)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # leave without waiting for daemon threads / shutdown hooks


# ================================================================ driver

def run_cell(peer, workload, transport, args, env, tmp):
    import run
    pin = None if args.no_pin else args.cpu
    lifetime = int(args.warmup + args.seconds + args.timeout + 180)
    started = []
    addr = None
    try:
        server = run.Proc([sys.executable, SCRIPT, "server", peer, transport,
                           "--sockdir", tmp["sockdir"], "--certs", tmp["certs"],
                           "--lifetime", str(lifetime)],
                          env, f"{peer} {transport} server", pin)
        started.append(server)
        addr = server.expect("ADDR", time.monotonic() + 60)
        client = run.Proc([sys.executable, SCRIPT, "client", peer, workload, addr,
                           "--certs", tmp["certs"], "--seconds", str(args.seconds),
                           "--warmup", str(args.warmup), "--max-count", str(args.max_count),
                           "--timeout", str(args.timeout), "--lifetime", str(lifetime)],
                          env, f"{peer} {transport} {workload} client", pin)
        started.append(client)
        client.expect("READY", time.monotonic() + 90 + args.warmup * 2 + args.timeout)
        client.send("GO\n")
        res = json.loads(client.expect(
            "RESULT", time.monotonic() + args.seconds * 2 + args.timeout + 60))
        client.wait_exit(10)
    except run.ProcError as e:
        return {"error": str(e), "addr": addr}
    finally:
        for pr in reversed(started):
            pr.close()
    rate = res["calls"] / res["elapsed"] if res["elapsed"] > 0 else 0.0
    return {"calls_per_s": rate, "mb_per_s": rate * res["bytes_per_call"] / 1e6,
            "calls": res["calls"], "elapsed": res["elapsed"], "mode": res["mode"],
            "tls": res.get("tls", ""), "addr": addr, "pinned_cpu": pin}


def prepare(env, tmp, args):
    """Probe syncpb (in a child) and write the TLS development set; probe
    Twisted's TLS pieces. Returns ({peer: (ok, info)}, facts)."""
    code = ("import sys, syncpb, syncpb.tls, OpenSSL.SSL as S\n"
            "syncpb.tls.write_dev_set(sys.argv[1], ['localhost', '127.0.0.1'])\n"
            "print('OK', syncpb.__version__, syncpb.__file__, '|',"
            " S.OpenSSL_version(S.OPENSSL_VERSION).decode())\n")
    status = {}
    facts = {}
    try:
        out = subprocess.run([sys.executable, "-c", code, tmp["certs"]], capture_output=True,
                             text=True, env=env, timeout=60, cwd=HERE)
        line = (out.stdout.strip().splitlines() or ["NO " + out.stderr.strip()[-400:]])[-1]
    except subprocess.TimeoutExpired:
        line = "NO import syncpb / writing certificates timed out"
    if line.startswith("OK"):
        info, _, ossl = line[3:].partition(" | ")
        status["syncpb"] = (True, info)
        facts["pyopenssl_links"] = ossl
    else:
        status["syncpb"] = (False, line[3:])
    missing = [m for m in ("twisted", "OpenSSL", "service_identity") if util.find_spec(m) is None]
    status["twisted"] = (False, "missing " + ", ".join(missing)) if missing else (True, "")
    # Without syncpb there are no certificates either: Twisted's TLS cells then
    # fail (reported under "Errors") and its plain ones still run.
    return status, facts


def openssl_speed(args):
    """{cipher: bytes/s at 16384-byte blocks} or {"error": why}."""
    exe = shutil.which("openssl")
    if not exe:
        return {"error": "openssl: command not found"}
    out = {"version": ""}
    try:
        out["version"] = subprocess.run([exe, "version"], capture_output=True, text=True,
                                        timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    pin = [] if args.no_pin or not shutil.which("taskset") else ["taskset", "-c", str(args.cpu)]
    for cipher in ("aes-128-gcm", "aes-256-gcm"):
        cmd = pin + [exe, "speed", "-evp", cipher, "-seconds", "1", "-bytes", "16384"]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            out[cipher] = "timed out"
            continue
        except OSError as e:
            out[cipher] = f"failed: {e}"
            continue
        m = re.search(r"^%s\s+([\d.]+)k\s*$" % re.escape(cipher.upper()), p.stdout, re.M)
        if m:
            out[cipher] = float(m.group(1)) * 1000.0
        else:
            out[cipher] = f"unparsed (rc={p.returncode}): {(p.stdout + p.stderr)[-300:]}"
        out[cipher + "_cmd"] = " ".join(shlex.quote(a) for a in cmd)
    return out


# ================================================================ report

def medians(cells, key):
    med = {}
    for k, cs in cells.items():
        vals = [c[key] for c in cs if key in c]
        if any("error" in c for c in cs):
            med[k] = "ERR"
        elif vals:
            med[k] = statistics.median(vals)
    return med


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return None
    return a / b


def fr(r):
    return "n/a" if r is None else f"{r:.2f}x"


def fv(v, digits=0):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:,.{digits}f}"


def target_checks(med, workloads, transports, peers):
    out = []
    for w, t, against, factor in TARGETS:
        if w not in workloads or t not in transports or "syncpb" not in peers:
            continue
        s = med.get((w, t, "syncpb"))
        if against == "tcp":
            if "tcp" not in transports:
                continue
            o = med.get((w, "tcp", "syncpb"))
            what = f"{w} {t} >= {factor:g}x syncpb tcp"
        else:
            if "twisted" not in peers:
                continue
            o = med.get((w, t, "twisted"))
            what = f"{w} {t} >= {factor:g}x Twisted {t}"
        r = ratio(s, o)
        status = "n/a" if r is None else ("met" if r >= factor else "not met")
        out.append({"target": what, "ratio": r, "status": status})
    return out


def report(args, facts, status, workloads, transports, peers, cells, speed, cmdline, total_s):
    P = print
    med = medians(cells, "calls_per_s")
    P("# syncpb transports benchmark")
    P()
    if args.quick:
        P(f"**QUICK SMOKE RUN** (1 round, {args.seconds:g} s per cell): figures are "
          "indicative only, not a measurement.")
        P()
    elif args.rounds < 3:
        P(f"**Only {args.rounds} round(s)**: a valid measurement needs at least 3.")
        P()
    P(f"Command: `{cmdline}` ({total_s:.0f} s)")
    P()
    pin = "not pinned (--no-pin)" if args.no_pin else f"both pinned to CPU {args.cpu}"
    P(f"Rounds: {args.rounds}; each cell is a fresh server process and one client process "
      f"({pin}), a {args.warmup:g} s warm-up with full answer checks, then a measured phase of "
      f"{args.seconds:g} s (or {args.max_count:,} calls); value = median over rounds. "
      "TCP on 127.0.0.1, unix sockets in a temporary directory; TLS with a "
      "`syncpb.tls.write_dev_set` development set (EC P-256), clients verifying the CA and "
      "the name `localhost`.")
    P()
    missing = [(p, status[p][1]) for p in args.peers if not status[p][0]]
    for p, why in missing:
        P(f"- {p}: not available ({why})")
    if missing:
        P()

    for w in workloads:
        P(f"## {LABEL[w]}")
        P()
        cols = ["transport", "syncpb calls/s", "Twisted calls/s", "syncpb/Twisted",
                "syncpb / syncpb-TCP", "Twisted / Twisted-TCP"]
        if w == "W3":
            cols[3:3] = ["syncpb MB/s", "Twisted MB/s"]
        P("| " + " | ".join(cols) + " |")
        P("|---|" + "---:|" * (len(cols) - 1))
        for t in transports:
            s = med.get((w, t, "syncpb"))
            tw = med.get((w, t, "twisted"))
            row = [t, fv(s), fv(tw)]
            if w == "W3":
                row += [fv(s * common.BLOB_SIZE / 1e6, 1) if isinstance(s, float) else fv(s),
                        fv(tw * common.BLOB_SIZE / 1e6, 1) if isinstance(tw, float) else fv(tw)]
            row += [fr(ratio(s, tw)), fr(ratio(s, med.get((w, "tcp", "syncpb")))),
                    fr(ratio(tw, med.get((w, "tcp", "twisted"))))]
            P("| " + " | ".join(row) + " |")
        P()

    checks = target_checks(med, workloads, transports, peers)
    if checks:
        P("## Targets")
        P()
        P("| target | ratio | status |")
        P("|---|---:|---|")
        for c in checks:
            st = c["status"] if c["status"] != "not met" else "**not met**"
            P(f"| {c['target']} | {fr(c['ratio'])} | {st} |")
        P()
        met = sum(c["status"] == "met" for c in checks)
        P(f"{met} of {len(checks)} targets met.")
        P()

    P("## TLS ceiling: `openssl speed`")
    P()
    if "error" in speed:
        P(f"Not measured: {speed['error']}.")
    else:
        P(f"{speed.get('version', '')} (command line); pyOpenSSL in the peers links "
          f"{facts.get('pyopenssl_links', '?')}.")
        P()
        P("| cipher | 16384-byte blocks, bytes/s | W3 ceiling, MB/s | W3 ceiling, calls/s |")
        P("|---|---:|---:|---:|")
        for cipher in ("aes-128-gcm", "aes-256-gcm"):
            v = speed.get(cipher)
            if isinstance(v, float):
                cap = v / 4
                P(f"| {cipher} | {v:,.0f} | {cap / 1e6:,.0f} | {cap / common.BLOB_SIZE:,.0f} |")
            else:
                P(f"| {cipher} | {v} | | |")
        P()
        P("Each W3 call moves 256 KiB each way, and each way is encrypted by one process and "
          "decrypted by the other, all on the one pinned CPU: 4 AES-GCM passes per payload "
          "byte, so the ceiling is bytes/s / 4 (crypto alone; the copies and the PB work come "
          "on top). Commands: " + "; ".join(
              f"`{speed[k]}`" for k in ("aes-128-gcm_cmd", "aes-256-gcm_cmd") if k in speed)
          + ".")
    P()

    negotiated = {}
    for (w, t, p), cs in cells.items():
        for c in cs:
            if c.get("tls"):
                negotiated.setdefault((p, t), set()).add(c["tls"])
    if negotiated:
        P("Negotiated: " + "; ".join(f"{p} {t}: {', '.join(sorted(v))}"
                                     for (p, t), v in sorted(negotiated.items())) + ".")
        P()

    P("## Per round (calls/s)")
    P()
    P("| workload | transport | peer | " + " | ".join(f"r{i + 1}" for i in range(args.rounds))
      + " | median | spread |")
    P("|---|---|---|" + "---:|" * (args.rounds + 2))
    for w in workloads:
        for t in transports:
            for p in peers:
                cs = cells.get((w, t, p), [])
                vals = [c.get("calls_per_s") for c in cs]
                shown = [fv(v) if v is not None else "ERR" for v in vals]
                good = [v for v in vals if v is not None]
                spread = (f"{(max(good) / min(good) - 1) * 100:.0f}%"
                          if len(good) > 1 and min(good) > 0 else "")
                P(f"| {w} | {t} | {p} | "
                  + " | ".join(shown + [""] * (args.rounds - len(shown)))
                  + f" | {fv(med.get((w, t, p)))} | {spread} |")
    P()

    errors = [(k, c) for k, cs in cells.items() for c in cs if "error" in c]
    if errors:
        P("## Errors")
        P()
        for (w, t, p), c in errors:
            P(f"- {w} {t} {p} (round {c.get('round')}, address {c.get('addr')}):")
            P("```")
            P(c["error"].strip()[-1500:])
            P("```")
        P()

    import run
    run.print_machine(P, facts)
    P(f"- loadavg_end: {os.getloadavg()}")
    return med, checks


# ================================================================ main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick: 1)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="measured phase per cell (default 2; --quick: 0.2)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="warm-up per client (default 0.3; --quick: 0.05)")
    ap.add_argument("--max-count", type=int, default=5_000_000,
                    help="call-count bound of a measured phase")
    ap.add_argument("--quick", action="store_true", help="smoke run, < 40 s")
    ap.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    ap.add_argument("--transports", default=",".join(ALL_TRANSPORTS))
    ap.add_argument("--peers", default=",".join(ALL_PEERS))
    ap.add_argument("--cpu", type=int, default=0, help="CPU to pin server and client to")
    ap.add_argument("--no-pin", action="store_true", help="do not pin anything")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-phase safety timeout")
    ap.add_argument("--syncpb-path", metavar="DIR", default=REPO,
                    help="directory to import syncpb from (default: this work tree)")
    ap.add_argument("--json", metavar="PATH", help="also write all raw results as JSON")
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.seconds is None:
        args.seconds = 0.2 if args.quick else 2.0
    if args.warmup is None:
        args.warmup = 0.05 if args.quick else 0.3
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0 or args.max_count < 1:
        ap.error("--rounds >= 1, --seconds > 0, --warmup >= 0, --max-count >= 1")

    def pick(text, allowed, what, up=False):
        items = [x.strip().upper() if up else x.strip().lower()
                 for x in text.split(",") if x.strip()]
        for x in items:
            if x not in allowed:
                ap.error(f"unknown {what} {x} (choose from {', '.join(allowed)})")
        return [x for x in allowed if x in items]
    args.workloads = pick(args.workloads, ALL_WORKLOADS, "workload", up=True)
    args.transports = pick(args.transports, ALL_TRANSPORTS, "transport")
    args.peers = pick(args.peers, ALL_PEERS, "peer")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("server", "client"):
        return child_main(argv)
    args = parse_args(argv)
    import run
    cmdline = " ".join(shlex.quote(a) for a in [sys.executable, sys.argv[0]] + argv)
    env = run.child_env(os.path.abspath(args.syncpb_path))
    facts = run.machine_facts(args)
    facts["versions"].update({n: run.pkg_version(n) for n in ("pyOpenSSL", "cryptography")})
    for n in ("Pyro5", "msgpack", "serpent"):  # not used here
        facts["versions"].pop(n, None)
    t_start = time.monotonic()

    base = tempfile.mkdtemp(prefix="syncpb-tr-")
    tmp = {"base": base, "certs": os.path.join(base, "certs"),
           "sockdir": os.path.join(base, "s")}
    os.mkdir(tmp["sockdir"], 0o700)
    cells = {}
    try:
        status, more = prepare(env, tmp, args)
        facts.update(more)
        peers = [p for p in args.peers if status[p][0]]
        for p in args.peers:
            if not status[p][0]:
                log(f"{p}: not available ({status[p][1]})")
        if status["syncpb"][0]:
            facts["syncpb_import"] = status["syncpb"][1]
        log("openssl speed ...")
        speed = openssl_speed(args)
        if not peers:
            log("no peer available")
            return 2
        for r in range(args.rounds):
            porder = peers[r % len(peers):] + peers[:r % len(peers)]
            k = r % len(args.transports)
            torder = args.transports[k:] + args.transports[:k]
            for w in args.workloads:
                for t in torder:
                    for p in porder:
                        t0 = time.monotonic()
                        res = run_cell(p, w, t, args, env, tmp)
                        res["round"] = r + 1
                        cells.setdefault((w, t, p), []).append(res)
                        if "error" in res:
                            log(f"round {r + 1} {w} {t} {p}: ERROR "
                                f"{res['error'].splitlines()[0]}")
                        else:
                            log(f"round {r + 1} {w} {t} {p}: {res['calls_per_s']:,.0f} "
                                f"calls/s ({time.monotonic() - t0:.1f} s)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    total_s = time.monotonic() - t_start
    log(f"total {total_s:.0f} s")

    # keep the report's order fixed, whatever ran
    med, checks = report(args, facts, status, args.workloads, args.transports, peers, cells,
                         speed, cmdline, total_s)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": cmdline, "facts": facts, "args": vars(args),
                       "status": status, "openssl_speed": speed,
                       "cells": {f"{w}/{t}/{p}": cs for (w, t, p), cs in cells.items()},
                       "median_calls_per_s": {f"{w}/{t}/{p}": v for (w, t, p), v in med.items()},
                       "targets": checks, "seconds": total_s}, f, indent=1, default=str)
    return 1 if any("error" in c for cs in cells.values() for c in cs) else 0


if __name__ == "__main__":
    sys.exit(main())
