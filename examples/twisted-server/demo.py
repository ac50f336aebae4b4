"""The twisted-server demo: a Twisted server process, a syncpb client.

    python examples/twisted-server/demo.py

Needs Twisted for the server (``pip install twisted``); the client uses
syncpb only.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import client  # noqa: E402  (the example's own client module)
from demo_server import serving  # noqa: E402


def main() -> None:
    # The server prints two addresses: serving() reads the first, we read the
    # second (it is printed right after, before the server runs).
    with serving(os.path.join(HERE, "server.py")) as (public_address, server):
        login_address = server.stdout.readline().strip()
        print(f"Twisted server (pid {server.pid}): root at {public_address}, "
              f"login at {login_address}")
        client.main(public_address, login_address)
    print("server stopped")


if __name__ == "__main__":
    main()
