"""A small service for the threads example: it counts calls and connections.

    python server.py tcp://127.0.0.1:8834

prints its address, then serves until its stdin closes.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Dict

import syncpb


class Counter(syncpb.Root):
    def __init__(self) -> None:
        self.connections = 0
        self.calls = 0

    def rootObject(self, broker: Any) -> syncpb.Referenceable:  # noqa: N802 - Twisted's name
        """Runs once for each new connection: count them."""
        self.connections += 1
        return self

    def remote_multiply(self, a: int, b: int) -> int:
        self.calls += 1
        return a * b

    def remote_stats(self) -> Dict[str, int]:
        return {"connections": self.connections, "calls": self.calls}


def main(address: str) -> None:
    server = syncpb.Server(Counter())
    print(server.listen(address), flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8834")
