"""Hand out a copy (by value) and a cached replica (kept up to date).

    python server.py tcp://127.0.0.1:8832

prints its address, then serves until its stdin closes.
"""

from __future__ import annotations

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import syncpb  # noqa: E402

from shared import Reading, Thermostat  # noqa: E402


class House(syncpb.Root):
    def __init__(self) -> None:
        self.thermostat = Thermostat("kitchen")

    def remote_reading(self) -> Reading:
        """A Copyable: the caller gets a RemoteReading of the state now."""
        t = self.thermostat
        return Reading(t.room, t.target, t.mode)

    def remote_thermostat(self) -> Thermostat:
        """A Cacheable: the caller gets a RemoteThermostat replica."""
        return self.thermostat

    def remote_setTarget(self, target: float) -> syncpb.Deferred:  # noqa: N802 - the PB name
        """Change the thermostat; answer once every replica has the update,
        so the caller's replica is current when this call returns."""
        updates = self.thermostat.set_target(target)
        return syncpb.gather(updates).addCallback(lambda _: len(updates))


def main(address: str) -> None:
    server = syncpb.Server(House())
    print(server.listen(address), flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8832")
