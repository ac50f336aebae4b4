"""A greeter behind a login: one Viewable object, a different answer per user.

    python server.py tcp://127.0.0.1:8831

Users alice/wonderland and bob/builder. Prints its address, then serves
until its stdin closes.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from typing import Any, Tuple

import syncpb


class Greeter(syncpb.Viewable):
    """One object shared by every user. It travels as a reference to the
    receiving user's view, so each view_ method gets that user's avatar
    (the perspective) as its first argument."""

    def __init__(self) -> None:
        self.greetings: Counter[str] = Counter()

    def view_greet(self, user: "User") -> str:
        self.greetings[user.name] += 1
        count = self.greetings[user.name]
        return f"hello {user.name}, you have greeted {count} time{'s' if count > 1 else ''}"

    def view_total(self, user: "User") -> str:
        return f"{sum(self.greetings.values())} greetings from {len(self.greetings)} users"


class User(syncpb.Avatar):
    """A logged-in user: perspective_ methods only."""

    def __init__(self, name: str, greeter: Greeter) -> None:
        self.name, self.greeter = name, greeter

    def perspective_greeter(self) -> Greeter:
        return self.greeter  # sent for this avatar: the peer gets this user's view


class Realm:
    def __init__(self) -> None:
        self.greeter = Greeter()

    def requestAvatar(self, avatar_id: bytes, mind: Any,  # noqa: N802 - Twisted's name
                      *interfaces: Any) -> Tuple[Any, User, Any]:
        return syncpb.IPerspective, User(avatar_id.decode(), self.greeter), lambda: None


def main(address: str) -> None:
    checker = syncpb.InMemoryPasswordChecker(alice="wonderland", bob="builder")
    server = syncpb.Server(syncpb.Portal(Realm(), [checker]))
    print(server.listen(address), flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8831")
