"""The simplest PB service: a root whose one method echoes what it is given.

    python server.py tcp://127.0.0.1:8830

prints its address, then serves until its stdin closes.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import syncpb


class Echo(syncpb.Root):
    """Published on every connection; peers call its remote_ methods."""

    def remote_echo(self, value: Any) -> Any:
        return value


def main(address: str) -> None:
    server = syncpb.Server(Echo())
    print(server.listen(address), flush=True)  # port 0 picks a free port
    # Stop when our stdin closes (how demo.py stops us).
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8830")
