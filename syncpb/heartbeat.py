"""A PB-level heartbeat: notice a peer that stopped answering.

TCP keepalive (:mod:`syncpb.keepalive`) is answered by the peer's kernel
and by any proxy in between, so it cannot tell a hung peer process, or a
proxy that stopped forwarding, from a healthy one. PB has no ping message,
so the heartbeat calls a method the user names on the peer's root every
``interval`` seconds. Any answer, a value or a remote error, proves the
peer is alive; no answer within ``timeout`` seconds closes the connection
with a reason naming the heartbeat: waiting calls fail with
:class:`~syncpb.errors.ConnectionLost` and ``notifyOnDisconnect`` callbacks
run once, as for any other end. Because it only makes ordinary calls, it
works against any PB server, Twisted's included.

A dead peer is noticed within ``interval + timeout`` seconds of it going
silent. The beats run in one OS thread per connection (there is no reactor
to schedule them on), started by :func:`syncpb.connect` when given
``heartbeat=Heartbeat(...)``; the thread ends with the connection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from .errors import CallTimeout, ConnectionLost, DeadReferenceError
from .osthreads import OSFlag, OSThread

__all__ = ["Heartbeat", "start"]

log = logging.getLogger("syncpb")


@dataclass(frozen=True)
class Heartbeat:
    """Call ``method`` on the peer's root every ``interval`` seconds.

    Attributes:
        method: the remote method to call (e.g. ``"ping"`` for a
            ``remote_ping``). Name a cheap method that exists: a peer
            answering "no such method" counts as alive too, but Twisted
            logs a traceback for each such call.
        interval: seconds from one answered beat to the next call.
        timeout: seconds a beat may wait for its answer before the peer is
            declared dead.
        args: arguments of each call.
        on_answer: called (in the heartbeat's thread) with the round-trip
            time in seconds of each answered beat: a live measure of the
            link's latency. Exceptions it raises are logged.
    """

    method: str
    interval: float = 30.0
    timeout: float = 10.0
    args: Tuple[Any, ...] = ()
    on_answer: Optional[Callable[[float], Any]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise ValueError("Heartbeat needs the name of a remote method")
        if not self.interval > 0 or not self.timeout > 0:
            raise ValueError("Heartbeat interval and timeout must be positive")

    @property
    def bound(self) -> float:
        """Seconds after which a silent peer is noticed at the latest."""
        return self.interval + self.timeout


def start(beat: Heartbeat, target: Any, session: Any) -> None:
    """Beat against ``target`` (a RemoteReference) until ``session`` ends."""
    ended = OSFlag()
    session.notify_on_disconnect(ended.set)
    OSThread(lambda: _beat(beat, target, session, ended), f"syncpb-heartbeat {session.name}").start()


def _beat(beat: Heartbeat, target: Any, session: Any, ended: OSFlag) -> None:
    while not ended.wait(beat.interval):
        sent = time.monotonic()
        try:
            target.callRemote(beat.method, *beat.args).result(timeout=beat.timeout)
        except CallTimeout:
            reason = (f"heartbeat: no answer to {beat.method!r} within {beat.timeout:g} s "
                      f"(the peer, or the path to it, stopped responding)")
            log.warning("closing PB connection %s: %s", session.name, reason)
            session.close(reason)
            return
        except (ConnectionLost, DeadReferenceError):
            return
        except Exception:  # a remote error is an answer: the peer is alive
            pass
        if beat.on_answer is not None:
            try:
                beat.on_answer(time.monotonic() - sent)
            except Exception:
                log.exception("error in a heartbeat's on_answer")
