"""Two chat users, alice and bob, each on their own connection.

    python client.py tcp://127.0.0.1:8833

Each passes a mind to login; the server calls the mind's remote_receive
(on one of the connection's dispatcher threads) for every message of a
group it joined. The mind puts messages in a queue, and the user waits on
that queue with a timeout: no sleeping, no guessing.
"""

from __future__ import annotations

import queue
import sys
from typing import List, Tuple

import syncpb

WAIT = 10.0  # seconds to wait for a message before giving up
Message = Tuple[str, str, str]  # group, sender, text


class Mind(syncpb.Referenceable):
    """What the server holds of this client: it calls us here."""

    def __init__(self) -> None:
        self.inbox: "queue.Queue[Message]" = queue.Queue()

    def remote_receive(self, group: str, sender: str, text: str) -> None:
        self.inbox.put((group, sender, text))


class Chatter:
    """One user: a login with a mind on a connection of their own."""

    def __init__(self, conn: syncpb.Connection, name: str, password: str) -> None:
        self.name = name
        self.mind = Mind()
        self.avatar = conn.login(name, password, mind=self.mind)

    def join(self, group: str) -> syncpb.RemoteReference:
        view: syncpb.RemoteReference = self.avatar.joinGroup(group)  # our view of it
        return view

    def receive(self, count: int) -> List[Message]:
        """The next ``count`` messages; raises queue.Empty after WAIT s without one."""
        return [self.mind.inbox.get(timeout=WAIT) for _ in range(count)]


def main(address: str) -> None:
    with syncpb.connect(address, timeout=10) as alice_conn, \
            syncpb.connect(address, timeout=10) as bob_conn:
        alice = Chatter(alice_conn, "alice", "wonderland")
        bob = Chatter(bob_conn, "bob", "builder")
        alice_lobby, bob_lobby = alice.join("lobby"), bob.join("lobby")
        print("members of lobby:", alice_lobby.members())
        alice_lobby.send("hi bob")
        bob_lobby.send("hello alice, how are you?")
        alice_lobby.callRemote("send", "fine, thanks").result(timeout=WAIT)
        for user in (alice, bob):
            for group, sender, text in user.receive(3):
                print(f"{user.name} received: [{group}] <{sender}> {text}")


if __name__ == "__main__":
    main(sys.argv[1])
