"""Gates for test roots: a remote method that waits until a later call opens it.

``wait_gate(name)`` blocks (cooperatively, in the server's hub) until
``open_gate(name)``; ``until_waiting(name)`` returns once some call waits at
that gate, so a test knows a call is in progress without sleeping. Gates are
created lazily in the hub thread, so open and wait may arrive in either order.
"""

from __future__ import annotations

from typing import Dict, Tuple

import gevent.event


class Gates:
    """Mix into a ``syncpb.Root`` to give it named gates."""

    def _gate(self, name: str) -> Tuple[gevent.event.Event, gevent.event.Event]:
        gates: Dict[str, Tuple[gevent.event.Event, gevent.event.Event]] = \
            self.__dict__.setdefault("_gates", {})
        if name not in gates:
            gates[name] = (gevent.event.Event(), gevent.event.Event())
        return gates[name]

    def on_gate_waited(self, name: str) -> None:
        """Called (in the hub) when a call starts waiting at gate ``name``."""

    def remote_wait_gate(self, name):
        opened, waited = self._gate(name)
        waited.set()
        self.on_gate_waited(name)
        opened.wait()
        return f"{name} passed"

    def remote_until_waiting(self, name):
        self._gate(name)[1].wait()
        return True

    def remote_open_gate(self, name):
        self._gate(name)[0].set()
        return True
