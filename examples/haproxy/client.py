"""Connect through the load balancer several times; each connection says
which server it reached (the calculator's ``whoami``) and calculates there."""

from __future__ import annotations

import sys
from typing import List

import syncpb


def reach(address: str, connections: int) -> List[str]:
    """Open ``connections`` connections one after another; the server of each."""
    names = []
    for number in range(connections):
        with syncpb.connect(address, timeout=10) as conn:
            name = conn.root.whoami().split(" ")[0]
            assert conn.root.calculate(number, 1) == number + 1  # every call: same server
            names.append(name)
    return names


if __name__ == "__main__":
    print(reach(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 6))
