"""Classes both sides import: what travels by copy and by cache.

Each side imports this module as ``shared``, so the copy tags are
``shared.Score`` and ``shared.Scoreboard`` on both ends (as in Twisted, a
tag is ``module.ClassName``).
"""

from __future__ import annotations

import syncpb


class Score(syncpb.Copyable):
    """One result, sent by value."""

    def __init__(self, player: str, points: int, rank: int) -> None:
        self.player, self.points, self.rank = player, points, rank


class RemoteScore(syncpb.RemoteCopy):
    """The receiver's copy of a Score (built without calling __init__)."""

    def __str__(self) -> str:
        return f"{self.player}: {self.points} points (rank {self.rank})"


class Scoreboard(syncpb.Cacheable):
    """The high scores, copied once to each client and kept up to date."""

    def __init__(self) -> None:
        self.best: dict = {}
        self.observers = syncpb.ObserverList()

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.add(observer)
        return {"best": dict(self.best)}

    def stoppedObserving(self, perspective, observer):
        self.observers.discard(observer)

    def record(self, player: str, points: int):
        """Keep the best score; return the Deferreds of the holders' updates."""
        if points <= self.best.get(player, -1):
            return []
        self.best[player] = points
        return self.observers.notify("best", player, points)


class RemoteScoreboard(syncpb.RemoteCache):
    """A client's live copy of the Scoreboard."""

    def observe_best(self, player: str, points: int) -> None:
        self.best[player] = points

    def leader(self) -> str:
        if not self.best:
            return "nobody yet"
        player = max(self.best, key=self.best.get)
        return f"{player} with {self.best[player]}"


syncpb.setUnjellyableForClass(Score, RemoteScore)
syncpb.setUnjellyableForClass(Scoreboard, RemoteScoreboard)
