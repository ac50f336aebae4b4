"""A server with one slow method: it never holds up the fast ones.

    python server.py tcp://127.0.0.1:8835

A syncpb server runs calls in a gevent hub: a method that waits
cooperatively (here on a gevent Event) hands the connection to a new
greenlet, so the calls behind it go on. Prints its address, then serves
until its stdin closes.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Dict

import gevent.event

import syncpb


class Service(syncpb.Root):
    def __init__(self) -> None:
        self.answered = 0  # answers given so far: each answer's place in line
        self.slow_waiting = False
        self.wanted = 0
        self.fast_meanwhile = 0
        self.enough = gevent.event.Event()

    def _place(self) -> int:
        self.answered += 1
        return self.answered

    def remote_slow(self, fast_calls: int) -> Dict[str, Any]:
        """Slow work, simulated: wait (cooperatively) until ``fast_calls``
        other calls have been answered meanwhile, at most 10 seconds. With
        a server that stalled on this call, nothing else would be answered
        and it would give up after the 10 seconds."""
        self.wanted, self.fast_meanwhile = fast_calls, 0
        self.enough.clear()
        self.slow_waiting = True
        finished = self.enough.wait(timeout=10)
        self.slow_waiting = False
        return {"place": self._place(), "finished": finished,
                "fast_meanwhile": self.fast_meanwhile}

    def remote_fast(self, n: int) -> Dict[str, Any]:
        """Quick work: a square."""
        waiting = self.slow_waiting
        if waiting:
            self.fast_meanwhile += 1
            if self.fast_meanwhile >= self.wanted:
                self.enough.set()  # the slow call goes on after this answer
        return {"square": n * n, "place": self._place(), "slow_waiting": waiting}


def main(address: str) -> None:
    server = syncpb.Server(Service())
    print(server.listen(address), flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8835")
