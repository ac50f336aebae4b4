"""What both sides import: a Copyable and a Cacheable, and their remote twins.

Each side imports this module as ``shared``, so the copy tags are
``shared.Reading`` and ``shared.Thermostat`` on both ends (a tag is
``module.ClassName``, as in Twisted).
"""

from __future__ import annotations

from typing import Any, Dict, List

import syncpb


class Reading(syncpb.Copyable):
    """A snapshot, sent by value: the receiver gets the state as it was."""

    def __init__(self, room: str, target: float, mode: str) -> None:
        self.room, self.target, self.mode = room, target, mode


class RemoteReading(syncpb.RemoteCopy):
    """The receiver's copy of a Reading (built without calling __init__)."""

    room: str  # set from the sender's state
    target: float
    mode: str

    def __str__(self) -> str:
        return f"{self.room}: {self.target} degrees, {self.mode}"


class Thermostat(syncpb.Cacheable):
    """Copied once to each holder, then kept up to date through observers."""

    def __init__(self, room: str) -> None:
        self.room, self.target, self.mode = room, 20.0, "idle"
        self.observers = syncpb.ObserverList()

    def getStateToCacheAndObserveFor(self, perspective: Any,  # noqa: N802 - Twisted's name
                                     observer: Any) -> Dict[str, Any]:
        self.observers.add(observer)
        return {"room": self.room, "target": self.target, "mode": self.mode}

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:  # noqa: N802
        self.observers.discard(observer)

    def set_target(self, target: float) -> List[syncpb.Deferred]:
        """Change the state; return the Deferreds of the holders' updates."""
        self.target = target
        self.mode = "heating" if target > 20 else "idle"
        return self.observers.notify("setTarget", self.target, self.mode)


class RemoteThermostat(syncpb.RemoteCache):
    """A holder's live replica: the owner's updates run its observe_ methods."""

    room: str  # set from the state getStateToCacheAndObserveFor returned
    target: float
    mode: str

    def observe_setTarget(self, target: float, mode: str) -> None:  # noqa: N802 - the PB name
        print(f"  (replica update: target {self.target} -> {target}, {mode})")
        self.target, self.mode = target, mode

    def __str__(self) -> str:
        return f"{self.room}: {self.target} degrees, {self.mode}"


syncpb.setUnjellyableForClass(Reading, RemoteReading)
syncpb.setUnjellyableForClass(Thermostat, RemoteThermostat)
