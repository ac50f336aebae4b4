"""The arcade demo: one server process, one client, stopped at the end.

    python examples/scoreboard/demo.py
"""

from __future__ import annotations

import os
import select
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import client  # noqa: E402  (the example's own client module)


def main() -> None:
    server = subprocess.Popen([sys.executable, os.path.join(HERE, "server.py"),
                               "tcp://127.0.0.1:0"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 30)
        address = server.stdout.readline().strip() if ready else ""
        if not address.startswith("tcp://"):
            raise RuntimeError("the arcade server did not start")
        print(f"arcade server at {address} (pid {server.pid})")
        client.main(address)
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print("server stopped")


if __name__ == "__main__":
    main()
