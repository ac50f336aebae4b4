"""pbecho client: log in as guest/guest and echo a line; show a refused login.

    python client.py tcp://127.0.0.1:8789
"""

from __future__ import annotations

import sys

import syncpb


def main(address: str) -> None:
    with syncpb.connect(address, timeout=10) as conn:
        try:
            conn.login("guest", "not the password")
        except syncpb.UnauthorizedLogin:
            print("wrong password: refused (UnauthorizedLogin)")
        echoer = conn.login("guest", "guest")
        print("server echoed:", echoer.echo("hello world"))
        d = echoer.callRemote("echo", "hello again")  # the callback style works too
        print("server echoed:", d.result(timeout=10))


if __name__ == "__main__":
    main(sys.argv[1])
