"""Call the echo server twice: blocking, then callback-style.

    python client.py tcp://127.0.0.1:8830
"""

from __future__ import annotations

import sys

import syncpb


def main(address: str) -> None:
    with syncpb.connect(address, timeout=10) as conn:
        # Blocking: any attribute of a RemoteReference is a method that
        # waits for the answer (or raises the remote exception).
        print("blocking:", conn.root.echo("hi"))

        # Callback-style: callRemote returns a Deferred at once; callbacks
        # chain as in Twisted, and .result() waits for the end of the chain.
        d = conn.root.callRemote("echo", "hi again")
        d.addCallback(str.upper)
        d.addCallback(lambda text: f"{text}!")
        print("callback-style:", d.result(timeout=10))

        # Any PB value travels: lists, dicts, bytes, sets, ...
        print("structured:", conn.root.echo({"numbers": [1, 2, 3], "raw": b"\x00\xff"}))


if __name__ == "__main__":
    main(sys.argv[1])
