"""A calculator served over PB.

Serve it with the command line (any number of listeners, TLS, workers)::

    cd examples/calculator
    CALC_NAME=calc-1 syncpb serve server:Calculator --listen tcp://127.0.0.1:8800

or run this file on its own, which prints the address it listens on (port
0 picks a free port) and serves until interrupted or its stdin closes::

    python examples/calculator/server.py tcp://127.0.0.1:8800
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Optional

import syncpb


class Calculator(syncpb.Root):
    """Arithmetic for remote callers."""

    def __init__(self, name: Optional[str] = None) -> None:
        self.name = name or os.environ.get("CALC_NAME", "calculator")
        self.calls = 0

    def remote_calculate(self, a: float, b: float, op: str = "+") -> float:
        """Apply ``op`` (one of + - * /) to ``a`` and ``b``."""
        self.calls += 1
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                raise syncpb.Error("division by zero")
            return a / b
        raise syncpb.Error(f"unknown operator {op!r}")

    def remote_whoami(self) -> str:
        """Name and process id of this server."""
        return f"{self.name} (pid {os.getpid()})"

    def remote_stats(self) -> int:
        """How many calculations this server made."""
        return self.calls


def main(argv: list) -> None:
    address = argv[1] if len(argv) > 1 else "tcp://127.0.0.1:0"
    name = argv[2] if len(argv) > 2 else "calculator"
    server = syncpb.Server(Calculator(name))
    print(server.listen(address), flush=True)
    # Stop when the parent closes our stdin (how demo.py stops us).
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv)
