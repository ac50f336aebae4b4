"""A syncpb client of the plain Twisted server: no Twisted on this side.

    python client.py tcp://127.0.0.1:PUBLIC_PORT tcp://127.0.0.1:LOGIN_PORT
"""

from __future__ import annotations

import sys

import syncpb


def main(public_address: str, login_address: str) -> None:
    with syncpb.connect(public_address, timeout=10) as conn:  # Twisted's pb.Root
        print("titles:", conn.root.titles())
        print("author of dune:", conn.root.author("dune"))
        d = conn.root.callRemote("author", "emma")  # a Deferred, Twisted style
        print("author of emma (callback style):", d.result(timeout=10))
        try:
            conn.root.author("ulysses")
        except syncpb.Error as exc:  # Twisted's pb.Error arrives as syncpb.Error
            print(f"a Twisted pb.Error arrives as {type(exc).__name__}: {exc}")

    with syncpb.connect(login_address, timeout=10) as conn:  # Twisted's portal
        try:
            conn.login("alice", "not the password")
        except syncpb.UnauthorizedLogin:
            print("wrong password: refused (UnauthorizedLogin)")
        alice = conn.login("alice", "wonderland")  # PB's challenge-response
        print(alice.borrow("dune"))
        print(alice.callRemote("borrow", "emma").result(timeout=10))
        print("alice's loans:", alice.loans())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
