"""The calculator demo: three servers, one client, everything stopped at the end.

Run with ``make demo`` (or ``python examples/calculator/demo.py`` in an
environment where syncpb is installed).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import client  # noqa: E402  (the example's own client module)


def start_server(name: str) -> "tuple[subprocess.Popen, str]":
    """Start one calculator server process; return it and its address."""
    process = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "server.py"), "tcp://127.0.0.1:0", name],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
        if ready:
            line = process.stdout.readline().strip()
            if line.startswith("tcp://"):
                return process, line
            break
    process.kill()
    raise RuntimeError(f"server {name} did not start")


def stop(processes: List[subprocess.Popen]) -> None:
    """Close each server's stdin (it stops itself); kill one that lingers."""
    for process in processes:
        process.stdin.close()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    processes: List[subprocess.Popen] = []
    try:
        addresses = []
        for name in ("calc-1", "calc-2", "calc-3"):
            process, address = start_server(name)
            processes.append(process)
            addresses.append(address)
            print(f"started {name} at {address} (pid {process.pid})")
        client.main(addresses)
    finally:
        stop(processes)
        print("all servers stopped")


if __name__ == "__main__":
    main()
