"""The calculator demo: three servers on three kinds of listener, one client.

``make demo`` runs it. It makes a development CA and server certificate
(``syncpb tls init``), starts three ``syncpb serve`` processes -- calc-1 on
TCP, calc-2 on a unix socket, calc-3 on TLS over TCP -- spreads 1,000
additions over them from one client, blocking and then callback-style,
and stops them with SIGTERM (a graceful stop).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Tuple

import syncpb
from syncpb.tls import client_context

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import client  # noqa: E402  (the example's own client module)

SYNCPB = [sys.executable, "-m", "syncpb"]  # the same as the `syncpb` command


def start_server(name: str, listen: List[str]) -> Tuple[subprocess.Popen, str]:
    """Start ``syncpb serve server:Calculator``; return it and its address."""
    process = subprocess.Popen(
        [*SYNCPB, "serve", "server:Calculator", *listen, "--log-level", "info"],
        cwd=HERE, env={**os.environ, "CALC_NAME": name},
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], deadline - time.monotonic())
        line = process.stderr.readline() if ready else ""
        if "listening on " in line:
            # keep reading its log so that the server never blocks writing it
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, line.rsplit("listening on ", 1)[1].strip()
        if not line:
            break
    process.kill()
    raise RuntimeError(f"server {name} did not start")


def stop(processes: List[subprocess.Popen]) -> None:
    """SIGTERM each server (a graceful stop); kill one that lingers."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    processes: List[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="calc-demo-") as scratch:
        certs = os.path.join(scratch, "tls")
        subprocess.run([*SYNCPB, "tls", "init", certs, "--host", "127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL)
        listeners = {
            "calc-1": ["--listen", "tcp://127.0.0.1:0"],
            "calc-2": ["--listen", f"unix://{scratch}/calc.sock"],
            "calc-3": ["--listen", "tls://127.0.0.1:0",
                       "--tls-cert", f"{certs}/server.pem", "--tls-key", f"{certs}/server.key"],
        }
        try:
            addresses = []
            for name, listen in listeners.items():
                process, address = start_server(name, listen)
                processes.append(process)
                addresses.append(address)
                shown = address.replace(scratch, "DIR")
                print(f"started {name} at {shown} (pid {process.pid})")
            client.main(addresses, tls=client_context(ca=f"{certs}/ca.pem"))
        finally:
            stop(processes)
            print("all servers stopped")


if __name__ == "__main__":
    main()
