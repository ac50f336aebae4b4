"""The chat demo: start the server, let alice and bob talk, stop the server.

    python examples/chat/demo.py
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
        print(f"chat server at {address} (pid {server.pid})")
        client.main(address)
    said = server.stdout.read()
    print("server said:\n" + "".join(f"  {line}\n" for line in said.splitlines()), end="")
    print("server stopped")


if __name__ == "__main__":
    main()
