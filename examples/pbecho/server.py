"""pbecho, the seeds' login example: an echo service for user guest/guest.

    python server.py tcp://127.0.0.1:8789

prints its address, then serves until its stdin closes.
"""

from __future__ import annotations

import sys
import threading

import syncpb


class Echoer(syncpb.Avatar):
    """What a logged-in user reaches: perspective_ methods only."""

    def __init__(self, name: str) -> None:
        self.name = name

    def perspective_echo(self, text: str) -> str:
        print(f"echoing {text!r} for {self.name}", flush=True)
        return text

    def logout(self) -> None:
        print(f"{self.name} logged out", flush=True)


class EchoRealm:
    def requestAvatar(self, avatar_id, mind, *interfaces):  # noqa: N802 - Twisted's name
        avatar = Echoer(avatar_id.decode())
        return syncpb.IPerspective, avatar, avatar.logout


def main(address: str) -> None:
    portal = syncpb.Portal(EchoRealm(), [syncpb.InMemoryPasswordChecker(guest="guest")])
    server = syncpb.Server(portal)
    print(server.listen(address), flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8789")
