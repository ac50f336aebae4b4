"""Server memory: resident set size idle, and per idle connection.

A benchmark script, not a test. For each peer it starts the benchmark's own
server (``benchmarks/peer.py server PEER``: the code run.py measures), reads
its RSS from /proc once it listens, then opens ``--connections`` idle TCP
connections to it, waits until the server has accepted them all (its RSS
stops growing or ``--settle`` seconds pass) and reads the RSS again:

* idle RSS: the server process with its service loaded and no client;
* per connection: (RSS with the connections - idle RSS) / connections, for
  a plain accepted TCP connection (no protocol exchanged, the same for
  every peer) and, for syncpb, also for PB connections that completed the
  handshake (``syncpb.connect``).

It prints one row per peer and syncpb's ratio to each (lower is better).

    python benchmarks/memory.py [--connections 50] [--peers syncpb,pyro5,twisted]

Linux only (/proc/PID/status).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def start(peer: str) -> "tuple[subprocess.Popen[str], str]":
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "peer.py"), "server", peer,
                               "--lifetime", "300"], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline().strip()
    if not line.startswith("ADDR "):
        server.kill()
        raise RuntimeError(f"{peer} server did not start: {line!r}")
    return server, line.split(" ", 1)[1]


def settle(pid: int, seconds: float) -> int:
    """The RSS once it stops changing for a few readings (or after ``seconds``)."""
    deadline, last, steady = time.monotonic() + seconds, -1, 0
    while time.monotonic() < deadline and steady < 5:
        now = rss_kib(pid)
        steady = steady + 1 if now == last else 0
        last = now
        time.sleep(0.1)  # a reading every 100 ms; bounded by the deadline
    return last


def host_port(address: str) -> "tuple[str, int]":
    address = address.split("://", 1)[-1].split("@")[-1]
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def measure(peer: str, connections: int, settle_s: float) -> Dict[str, Optional[float]]:
    server, address = start(peer)
    try:
        idle = settle(server.pid, settle_s)
        host, port = host_port(address)
        socks: List[socket.socket] = [socket.create_connection((host, port), timeout=10)
                                      for _ in range(connections)]
        loaded = settle(server.pid, settle_s)
        for sock in socks:
            sock.close()
        per_pb: Optional[float] = None
        if peer == "syncpb":
            import syncpb
            before = settle(server.pid, settle_s)
            conns = [syncpb.connect(address, timeout=10) for _ in range(connections)]
            after = settle(server.pid, settle_s)
            per_pb = (after - before) / connections
            for conn in conns:
                conn.close()
        return {"idle": idle, "per_tcp": (loaded - idle) / connections, "per_pb": per_pb}
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=50,
                        help="idle connections (Pyro5's default pool serves 80 at most)")
    parser.add_argument("--peers", default="syncpb,pyro5,twisted")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="at most this long to wait for the RSS to settle (s)")
    args = parser.parse_args()
    results = {}
    for peer in args.peers.split(","):
        print(f"measuring {peer} ...", file=sys.stderr, flush=True)
        results[peer] = measure(peer, args.connections, args.settle)
    print(f"| server | idle RSS (MiB) | per idle TCP connection (KiB) | per PB connection (KiB) |")
    print("|---|---:|---:|---:|")
    for peer, r in results.items():
        pb = "" if r["per_pb"] is None else f"{r['per_pb']:.1f}"
        print(f"| {peer} | {r['idle'] / 1024:.1f} | {r['per_tcp']:.1f} | {pb} |")
    mine = results.get("syncpb")
    if mine:
        for peer, r in results.items():
            if peer != "syncpb" and r["idle"]:
                verdict = "met" if mine["idle"] <= r["idle"] else "MISSED"
                print(f"syncpb idle RSS / {peer}: {mine['idle'] / r['idle']:.2f}x "
                      f"(target <= 1.0x pyro5: {verdict})" if peer == "pyro5" else
                      f"syncpb idle RSS / {peer}: {mine['idle'] / r['idle']:.2f}x")


if __name__ == "__main__":
    main()
