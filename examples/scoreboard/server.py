"""The arcade server: avatars, a per-player view, a cached scoreboard, paging.

    python server.py tcp://127.0.0.1:8810

prints its address, then serves until its stdin closes.
"""

from __future__ import annotations

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import syncpb  # noqa: E402
from syncpb import util  # noqa: E402

from shared import Score, Scoreboard  # noqa: E402


class Table(syncpb.Viewable):
    """Every game played; each player's view shows their own."""

    def __init__(self) -> None:
        self.games: list = []

    def view_mine(self, player: "Player") -> list:
        return [points for name, points in self.games if name == player.name]

    def view_count(self, player: "Player") -> int:
        return len(self.games)


class Player(syncpb.Avatar):
    """One player's avatar (a login would hand it out; here join() does)."""

    def __init__(self, name: str, arcade: "Arcade") -> None:
        self.name, self.arcade = name, arcade

    def perspective_submit(self, points: int):
        """Record a game; answer with a Score copy once every scoreboard
        holder has the update."""
        arcade = self.arcade
        arcade.table.games.append((self.name, points))
        updates = arcade.scoreboard.record(self.name, points)
        rank = sorted(arcade.scoreboard.best.values(), reverse=True).index(
            arcade.scoreboard.best[self.name]) + 1
        score = Score(self.name, points, rank)
        return syncpb.gather(updates).addCallback(lambda _: score)

    def perspective_table(self) -> Table:
        return self.arcade.table


class Arcade(syncpb.Root):
    def __init__(self) -> None:
        self.players: dict = {}
        self.table = Table()
        self.scoreboard = Scoreboard()

    def remote_join(self, name: str) -> Player:
        return self.players.setdefault(name, Player(name, self))

    def remote_scoreboard(self) -> Scoreboard:
        return self.scoreboard

    def remote_history(self, collector) -> None:
        """Page the full game log (far larger than one PB message)."""
        log = "".join(f"game {i}: {name} scored {points}\n"
                      for i in range(2000) for name, points in self.table.games)
        util.StringPager(collector, log.encode())


def main(address: str) -> None:
    server = syncpb.Server(Arcade())
    print(server.listen(address), flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8810")
