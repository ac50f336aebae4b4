"""A chat server: users log in with a mind, join groups and talk.

    python server.py tcp://127.0.0.1:8833

Users alice/wonderland and bob/builder. A client passes a mind (a
Referenceable of its own) to login; the server delivers every message of a
group to each member's mind with ``mind.callRemote("receive", ...)``.
Prints its address, then serves until its stdin closes.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Dict, List, Tuple

import syncpb


class Group(syncpb.Viewable):
    """A chat room. Members reach it through their own view, so view_send
    knows who is talking: nobody can send in someone else's name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: Dict[str, "Member"] = {}

    def view_send(self, member: "Member", text: str) -> syncpb.Deferred:
        """Deliver ``text`` to every member (the sender too); answer once
        every mind has it."""
        print(f"[{self.name}] <{member.name}> {text}", flush=True)
        deliveries = [m.mind.callRemote("receive", self.name, member.name, text)
                      for m in list(self.members.values())]
        return syncpb.gather(deliveries).addCallback(lambda _: len(deliveries))

    def view_members(self, member: "Member") -> List[str]:
        return sorted(self.members)


class Member(syncpb.Avatar):
    """A logged-in user, holding the mind their client passed to login."""

    def __init__(self, name: str, mind: Any, chat: "ChatRealm") -> None:
        self.name, self.mind, self.chat = name, mind, chat
        self.groups: List[Group] = []

    def perspective_joinGroup(self, name: str) -> Group:  # noqa: N802 - the PB name
        group = self.chat.groups.setdefault(name, Group(name))
        group.members[self.name] = self
        self.groups.append(group)
        print(f"{self.name} joined {name}", flush=True)
        return group  # sent for this avatar: the client gets its own view

    def logout(self) -> None:
        for group in self.groups:
            group.members.pop(self.name, None)
        print(f"{self.name} logged out", flush=True)


class ChatRealm:
    def __init__(self) -> None:
        self.groups: Dict[str, Group] = {}

    def requestAvatar(self, avatar_id: bytes, mind: Any,  # noqa: N802 - Twisted's name
                      *interfaces: Any) -> Tuple[Any, Member, Any]:
        member = Member(avatar_id.decode(), mind, self)
        return syncpb.IPerspective, member, member.logout


def main(address: str) -> None:
    checker = syncpb.InMemoryPasswordChecker(alice="wonderland", bob="builder")
    server = syncpb.Server(syncpb.Portal(ChatRealm(), [checker]))
    print(server.listen(address), flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8833")
