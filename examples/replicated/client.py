"""A copy stays as it was sent; a cached replica follows the server.

    python client.py tcp://127.0.0.1:8832
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import syncpb  # noqa: E402

import shared  # noqa: E402,F401  (registers RemoteReading and RemoteThermostat)


def main(address: str) -> None:
    with syncpb.connect(address, timeout=10) as conn:
        reading = conn.root.reading()  # by value: a RemoteReading
        replica = conn.root.thermostat()  # by cache: a RemoteThermostat
        print(f"copy    ({type(reading).__name__}): {reading}")
        print(f"replica ({type(replica).__name__}): {replica}")

        print("asking the server to set the target to 23.5")
        holders = conn.root.setTarget(23.5)  # the server notifies every replica
        print(f"server updated {holders} replica(s)")
        print(f"copy after:    {reading}")  # unchanged: it was a snapshot
        print(f"replica after: {replica}")  # changed live, through observe_setTarget

        with syncpb.connect(address, timeout=10) as other:  # another client changes it
            print("another client sets the target to 18.0")
            other.root.setTarget(18.0)
        print(f"replica after: {replica}")
        print(f"a fresh copy:  {conn.root.reading()}")


if __name__ == "__main__":
    main(sys.argv[1])
