"""The threads demo: start the server, call it from 16 threads, stop the server.

    python examples/threads/demo.py
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import client  # noqa: E402  (the example's own client module)
from demo_server import serving  # noqa: E402


def main() -> None:
    with serving(os.path.join(HERE, "server.py")) as (address, server):
        print(f"counter server at {address} (pid {server.pid})")
        client.main(address)
    print("server stopped")


if __name__ == "__main__":
    main()
