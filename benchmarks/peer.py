"""Subprocess entry point of the benchmark: one server or one client.

    python benchmarks/peer.py server PEER [--lifetime S]
    python benchmarks/peer.py client PEER WORKLOAD ADDR [--seconds S ...]

Normally started by ``benchmarks/run.py``; see ``benchmarks/README.md``.
A server prints ``ADDR <address>`` and serves until SIGTERM (or until
``--lifetime`` seconds pass: SIGALRM ends it, so a lost server cannot linger).
A client prints ``READY``, waits for ``GO`` on stdin, and prints
``RESULT {json}`` (or ``ERROR {json}``); it too is bounded by SIGALRM.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from peers import PEERS, common  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("peer", choices=sorted(PEERS))
    s.add_argument("--lifetime", type=float, default=600.0)
    c = sub.add_parser("client")
    c.add_argument("peer", choices=sorted(PEERS))
    c.add_argument("workload", choices=sorted(common.WORKLOADS))
    c.add_argument("addr")
    d = common.Options()
    c.add_argument("--seconds", type=float, default=d.seconds)
    c.add_argument("--warmup", type=float, default=d.warmup)
    c.add_argument("--max-count", type=int, default=d.max_count)
    c.add_argument("--warmup-max", type=int, default=d.warmup_max)
    c.add_argument("--inflight", type=int, default=d.inflight)
    c.add_argument("--threads", type=int, default=d.threads)
    c.add_argument("--timeout", type=float, default=d.timeout)
    c.add_argument("--pyro5-w5", choices=("batch", "threads"), default=d.pyro5_w5)
    c.add_argument("--lifetime", type=float, default=600.0)
    args = ap.parse_args(argv)

    # Hard bound on this process's life, whatever happens to the driver.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(max(1, int(args.lifetime)))

    mod = importlib.import_module(PEERS[args.peer])
    if args.role == "server":
        mod.serve(common.HOST)
        return 0

    opts = common.Options(seconds=args.seconds, warmup=args.warmup,
                          max_count=args.max_count, warmup_max=args.warmup_max,
                          inflight=args.inflight, threads=args.threads,
                          timeout=args.timeout, pyro5_w5=args.pyro5_w5)
    try:
        res = mod.run_client(args.workload, args.addr, opts)
    except BaseException as e:  # noqa: BLE001 - reported to the driver
        traceback.print_exc()
        common.emit("ERROR", {"error": f"{type(e).__name__}: {e}"})
        sys.stdout.flush()
        os._exit(1)
    common.emit("RESULT", res)
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without waiting for daemon threads / library shutdown hooks.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
