"""The arcade client: every PB flavor from the caller's side.

    python client.py tcp://127.0.0.1:8810
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import syncpb  # noqa: E402
from syncpb import util  # noqa: E402

import shared  # noqa: E402,F401  (registers RemoteScore and RemoteScoreboard)


def main(address: str) -> None:
    with syncpb.connect(address, timeout=10) as conn:
        board = conn.root.scoreboard()  # a RemoteCache, kept up to date
        print(f"scoreboard copy: {type(board).__name__}, leader {board.leader()}")

        ann, bob = conn.root.join("ann"), conn.root.join("bob")  # avatars
        for player, points in ((ann, 120), (bob, 300), (ann, 450), (bob, 200)):
            score = player.submit(points)  # a Copyable comes back as a RemoteScore
            print(f"submitted: {score}; leader now {board.leader()}")

        ann_table, bob_table = ann.table(), bob.table()  # one Viewable, two views
        print(f"ann's view: {ann_table.mine()} of {ann_table.count()} games")
        print(f"bob's view: {bob_table.mine()} of {bob_table.count()} games")

        log = util.get_all_pages(conn.root, "history", timeout=30)  # paging
        lines = log.count(b"\n")
        print(f"history: {len(log)} bytes in pages, {lines} lines")


if __name__ == "__main__":
    main(sys.argv[1])
