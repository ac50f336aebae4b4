"""Shared by the examples' demo scripts: run one example server as a child process.

The server prints its address on its first line and stops when its stdin
closes; :func:`serving` yields the address and the process, and stops the
server (killing it only if it lingers) when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from typing import Iterator, Tuple


@contextlib.contextmanager
def serving(script: str, address: str = "tcp://127.0.0.1:0"
            ) -> Iterator[Tuple[str, "subprocess.Popen[str]"]]:
    server = subprocess.Popen([sys.executable, script, address],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 30)
        bound = server.stdout.readline().strip() if ready else ""
        if not bound.startswith(("tcp://", "unix://")):
            raise RuntimeError(f"{os.path.basename(script)} did not start")
        yield bound, server
    finally:
        server.stdin.close()  # the server stops at end of input
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
