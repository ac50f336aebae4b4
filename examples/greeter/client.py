"""Two users, two connections, one greeter: each gets their own answers.

    python client.py tcp://127.0.0.1:8831
"""

from __future__ import annotations

import sys

import syncpb


def main(address: str) -> None:
    with syncpb.connect(address, timeout=10) as alice_conn, \
            syncpb.connect(address, timeout=10) as bob_conn:
        alice = alice_conn.login("alice", "wonderland")  # avatars (perspective_ methods)
        bob = bob_conn.login("bob", "builder")
        alice_greeter = alice.greeter()  # the same server object, seen by alice
        bob_greeter = bob.greeter()  # ... and by bob
        print("alice:", alice_greeter.greet())
        print("alice:", alice_greeter.greet())
        print("bob:  ", bob_greeter.greet())
        print("alice:", alice_greeter.callRemote("greet").result(timeout=10))
        print("shared state:", bob_greeter.total())


if __name__ == "__main__":
    main(sys.argv[1])
