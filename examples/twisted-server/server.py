"""A plain Twisted PB server (no syncpb here): a public root and a login.

    pip install twisted
    python server.py

Listens on two ports of 127.0.0.1 (each picked by the system) and prints
them, one a line:

* ``pb.PBServerFactory(Library())``: a public root with remote_ methods;
* ``pb.PBServerFactory(portal)``: a cred portal (users alice/wonderland and
  bob/builder) whose avatars have perspective_ methods.

Stops when its stdin closes.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Dict, List, Tuple

from twisted.cred import checkers, portal
from twisted.internet import reactor
from twisted.spread import pb
from zope.interface import implementer


class Library(pb.Root):
    """Anyone may call these: no login needed."""

    def __init__(self) -> None:
        self.books = {"dune": "Frank Herbert", "emma": "Jane Austen"}

    def remote_titles(self) -> List[str]:
        return sorted(self.books)

    def remote_author(self, title: str) -> str:
        if title not in self.books:
            raise pb.Error(f"no book called {title!r}")  # an expected failure
        return self.books[title]


class Reader(pb.Avatar):
    """A logged-in reader's perspective."""

    def __init__(self, name: str, loans: Dict[str, List[str]]) -> None:
        self.name, self.loans = name, loans

    def perspective_borrow(self, title: str) -> str:
        self.loans.setdefault(self.name, []).append(title)
        return f"{self.name} borrowed {title}"

    def perspective_loans(self) -> List[str]:
        return self.loans.get(self.name, [])


@implementer(portal.IRealm)
class LibraryRealm:
    def __init__(self) -> None:
        self.loans: Dict[str, List[str]] = {}

    def requestAvatar(self, avatar_id: bytes, mind: Any,
                      *interfaces: Any) -> Tuple[Any, Reader, Callable[[], None]]:
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("PB logins only")
        reader = Reader(avatar_id.decode(), self.loans)
        return pb.IPerspective, reader, lambda: None


def main() -> None:
    users = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=b"wonderland",
                                                             bob=b"builder")
    library_portal = portal.Portal(LibraryRealm(), [users])
    public = reactor.listenTCP(0, pb.PBServerFactory(Library()), interface="127.0.0.1")
    login = reactor.listenTCP(0, pb.PBServerFactory(library_portal), interface="127.0.0.1")
    print(f"tcp://127.0.0.1:{public.getHost().port}", flush=True)
    print(f"tcp://127.0.0.1:{login.getHost().port}", flush=True)

    def stop_at_end_of_input() -> None:
        sys.stdin.read()
        reactor.callFromThread(reactor.stop)

    threading.Thread(target=stop_at_end_of_input, daemon=True).start()
    reactor.run()


if __name__ == "__main__":
    main()
