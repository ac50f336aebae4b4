"""How many instructions does one call take, client and server, under callgrind?

A benchmark script, not a test. Calls per second between two processes on
a shared VM move with the host's load by 20-50% from run to run; the
instructions a process executes per call do not. This script runs
``benchmarks/peer.py``'s server and client for one workload (W1 by
default), with one side under ``valgrind --tool=callgrind`` and the other
native, twice: for ``--calls`` and for three times as many. The
difference between the two totals, divided by the difference in calls, is
that side's instructions per call, free of start-up and import costs.
Both processes are pinned to one CPU (the first this process may use), as
``run.py`` pins W1: a server's path then does not depend on where the
client runs (unpinned, the server's count moved between 26k and 36k from
run to run). It prints one line per side and peer, so two trees compare
side by side:

    python benchmarks/instructions.py [--peers syncpb,raw] [--workload W1]
        [--calls 2000] [--segment BYTES] [--syncpb-path TREE]

Each run takes about 15 s (valgrind runs its side some 50x slower). The
figures are instructions (callgrind's ``Ir``), not time: a process that
shares its CPU with another also pays for cache misses, which callgrind
does not count.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import SEGMENT_BOOT  # noqa: E402  (the same boot as run.py's W2 in segments)
PEER = os.path.join(HERE, "peer.py")
COLLECTED = re.compile(rb"Collected : (\d+)")


def pin() -> None:
    """Run on the first CPU this process may use (in the child, before exec)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def total(side: str, peer: str, workload: str, calls: int, env: dict, segment: int = 0) -> int:
    """The instructions ``side`` executed over a run of ``calls`` calls
    (with ``segment``, syncpb's reads capped at that many bytes, as
    ``run.py``'s W2 in segments)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "valgrind.txt")
        valgrind = ["valgrind", "--tool=callgrind", f"--log-file={report}",
                    f"--callgrind-out-file={os.path.join(tmp, 'callgrind.out')}"]
        script = [sys.executable, PEER] if not segment else [
            sys.executable, "-c", SEGMENT_BOOT, str(segment), PEER]
        server_cmd = script + ["server", peer, "--lifetime", "600"]
        client_cmd = script + ["client", peer, workload, "ADDR",
                      "--seconds", "600", "--max-count", str(calls), "--warmup", "0",
                      "--warmup-max", "1", "--timeout", "120", "--lifetime", "600"]
        if side == "server":
            server_cmd = valgrind + server_cmd
        else:
            client_cmd = valgrind + client_cmd
        server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, env=env, preexec_fn=pin)
        try:
            assert server.stdout is not None
            line = server.stdout.readline().decode()
            if not line.startswith("ADDR "):
                raise SystemExit(f"the {peer} server did not start: {line!r}")
            client_cmd[client_cmd.index("ADDR")] = line.split()[1]
            client = subprocess.run(client_cmd, input=b"GO\n", stdout=subprocess.PIPE,
                                    env=env, timeout=600, check=False, preexec_fn=pin)
            if b"RESULT" not in client.stdout:
                raise SystemExit(f"the {peer} client failed: {client.stdout[-500:]!r}")
        finally:
            server.terminate()
            server.wait(timeout=120)
        with open(report, "rb") as f:
            found = COLLECTED.findall(f.read())
        if not found:
            raise SystemExit(f"no callgrind total for the {peer} {side} in {report}")
        return int(found[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", default="syncpb,raw")
    ap.add_argument("--workload", default="W1")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--segment", type=int, default=0, metavar="BYTES",
                    help="cap every read of syncpb's processes at BYTES (run.py's W2s: 1460)")
    ap.add_argument("--syncpb-path", default=None,
                    help="a tree to import syncpb from (its benchmarks/peers too)")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONHASHSEED="0")
    if args.syncpb_path:
        env["PYTHONPATH"] = os.path.abspath(args.syncpb_path)
    split = f", every read capped at {args.segment:,} bytes" if args.segment else ""
    print(f"instructions per {args.workload} call (callgrind Ir; runs of {args.calls:,} and "
          f"{3 * args.calls:,} calls{split})")
    for peer in args.peers.split(","):
        for side in ("client", "server"):
            low = total(side, peer, args.workload, args.calls, env, args.segment)
            high = total(side, peer, args.workload, 3 * args.calls, env, args.segment)
            print(f"{peer:8s} {side:6s} {(high - low) / (2 * args.calls):10,.0f}", flush=True)


if __name__ == "__main__":
    main()
