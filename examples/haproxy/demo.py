"""HAProxy (TCP mode, health checks) in front of three ``syncpb serve`` processes.

Needs ``haproxy`` on PATH (Debian: ``apt-get install haproxy``). Starts three
calculator servers on free ports, HAProxy on a free port (its listening
socket handed over as ``fd@N``), connects through it six times (round
robin: each server twice), stops one server and shows HAProxy's health
check taking it out, then checks that the servers logged no warning or
error -- health checks included -- and stops everything.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
CALCULATOR = os.path.join(os.path.dirname(HERE), "calculator")
sys.path.insert(0, HERE)

import client  # noqa: E402  (the example's own client)


class Process:
    """A child process whose stderr is collected line by line."""

    def __init__(self, args: List[str], env: Dict[str, str], cwd: str,
                 pass_fds: Tuple[int, ...] = ()) -> None:
        self.popen = subprocess.Popen(args, cwd=cwd, env={**os.environ, **env},
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True, pass_fds=pass_fds)
        self.log: List[str] = []

    def first_line_with(self, text: str, timeout: float = 30.0) -> str:
        """Read the log until a line holds ``text``; then keep draining it."""
        stream = self.popen.stderr
        assert stream is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stream], [], [], deadline - time.monotonic())
            line = stream.readline() if ready else ""
            if not line:
                break
            self.log.append(line.rstrip("\n"))
            if text in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return line
        raise RuntimeError(f"{self.popen.args[0]} never logged {text!r}: {self.log}")

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.log.append(line.rstrip("\n"))

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


def start_calculator(name: str) -> Tuple[Process, str]:
    process = Process([sys.executable, "-m", "syncpb", "serve", "server:Calculator",
                       "--listen", "tcp://127.0.0.1:0"], {"CALC_NAME": name}, CALCULATOR)
    line = process.first_line_with("listening on ")
    return process, line.rsplit("listening on tcp://", 1)[1].strip()


def haproxy_states(stats: str) -> Dict[str, str]:
    """Each backend server's state (UP, DOWN...) from HAProxy's runtime API."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(stats)
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    rows = [line.split(",") for line in data.decode().splitlines() if line]
    header = rows[0]
    name, status, check = header.index("svname"), header.index("status"), header.index(
        "check_status")
    return {row[name]: f"{row[status]}" for row in rows[1:]
            if row[0] == "calculators" and row[name].startswith("calc-") and row[check]}


def wait_for_states(stats: str, wanted: Dict[str, str], timeout: float = 30.0) -> None:
    """Ask HAProxy until its health checks agree with ``wanted``."""
    deadline = time.monotonic() + timeout
    states: Dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            states = haproxy_states(stats)
        except OSError:  # not up yet
            states = {}
        if all(states.get(name) == state for name, state in wanted.items()):
            return
        time.sleep(0.1)  # HAProxy checks every 500 ms; ask again shortly
    raise RuntimeError(f"HAProxy says {states}, not {wanted}")


def main() -> None:
    haproxy = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)),
        None)
    if haproxy is None:
        sys.exit("haproxy is not installed (Debian: apt-get install haproxy)")
    servers: List[Process] = []
    balancer = None
    with tempfile.TemporaryDirectory(prefix="haproxy-demo-") as scratch, \
            socket.socket() as frontend:
        try:
            env: Dict[str, str] = {}
            for number in (1, 2, 3):
                process, address = start_calculator(f"calc-{number}")
                servers.append(process)
                env[f"SYNCPB_SERVER_{number}"] = address
                print(f"started calc-{number} at tcp://{address}")
            frontend.bind(("127.0.0.1", 0))
            frontend.listen(128)
            port = frontend.getsockname()[1]
            stats = os.path.join(scratch, "haproxy.sock")
            env.update(SYNCPB_FRONTEND=f"fd@{frontend.fileno()}", SYNCPB_HAPROXY_STATS=stats)
            balancer = Process([haproxy, "-f", os.path.join(HERE, "haproxy.cfg"), "-db"], env,
                               HERE, pass_fds=(frontend.fileno(),))
            wait_for_states(stats, {f"calc-{n}": "UP" for n in (1, 2, 3)})
            address = f"tcp://127.0.0.1:{port}"
            print(f"haproxy at {address}: health checks say calc-1, calc-2, calc-3 are UP")
            print("6 connections reached:", " ".join(client.reach(address, 6)))
            servers[1].stop()
            wait_for_states(stats, {"calc-2": "DOWN"})
            print("calc-2 stopped; haproxy's health check took it out")
            print("4 connections reached:", " ".join(client.reach(address, 4)))
        finally:
            if balancer is not None:
                balancer.stop()
            for process in servers:
                process.stop()
    noisy = [line for process in servers for line in process.log
             if " WARNING " in line or " ERROR " in line]
    print(f"servers' logs: {len(noisy)} warnings or errors" + "".join(f"\n  {n}" for n in noisy))
    print("haproxy and all servers stopped")


if __name__ == "__main__":
    main()
