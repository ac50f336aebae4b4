"""TCP keepalive settings for PB connections.

A peer that vanishes without a FIN (a machine switched off, a cable pulled,
a NAT entry dropped) leaves an idle TCP connection open for ever: nothing
is sent, so nothing fails. With keepalive on, the kernel probes an idle
connection after ``idle`` seconds, every ``interval`` seconds, and resets
it after ``count`` unanswered probes; the session then sees the error, and
waiting calls fail with :class:`~syncpb.errors.ConnectionLost`. syncpb turns
it on for every TCP connection, client and server, with :data:`DEFAULT`
(a dead peer is noticed within about two minutes of silence instead of the
kernel's two hours).

Keepalive probes are answered by the peer's kernel, not by the peer
process, and by any proxy in between: a peer whose process hangs, or a
proxy that stops forwarding, still looks alive. The PB-level
:class:`~syncpb.heartbeat.Heartbeat` covers those.

Idle, interval and count are Linux's TCP_KEEPIDLE, TCP_KEEPINTVL and
TCP_KEEPCNT; where the platform lacks an option, only what it has is set
(macOS names the idle time TCP_KEEPALIVE).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Optional, Union

__all__ = ["Keepalive", "DEFAULT", "KeepaliveOption", "apply", "resolve"]


@dataclass(frozen=True)
class Keepalive:
    """TCP keepalive timing (whole seconds, as the kernel takes them).

    Attributes:
        idle: seconds of silence before the first probe.
        interval: seconds between unanswered probes.
        count: unanswered probes before the connection is reset.
    """

    idle: int = 60
    interval: int = 15
    count: int = 4

    def __post_init__(self) -> None:
        for name in ("idle", "interval", "count"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"Keepalive.{name} must be a positive whole number, "
                                 f"not {value!r}")

    @property
    def bound(self) -> int:
        """Seconds of silence after which a dead peer is noticed at the latest."""
        return self.idle + self.interval * self.count


#: What connections get unless told otherwise: a dead peer noticed within
#: 2 minutes (60 s idle + 4 probes 15 s apart).
DEFAULT = Keepalive()

#: What ``keepalive=`` accepts: a :class:`Keepalive`, True (:data:`DEFAULT`),
#: or False / None (off).
KeepaliveOption = Union[Keepalive, bool, None]


def resolve(option: KeepaliveOption) -> Optional[Keepalive]:
    """The settings ``option`` asks for (None: keepalive off)."""
    if option is True:
        return DEFAULT
    if option is False or option is None:
        return None
    if isinstance(option, Keepalive):
        return option
    raise TypeError(f"keepalive= takes a syncpb.Keepalive, True or False, not {option!r}")


_IDLE = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
_INTERVAL = getattr(socket, "TCP_KEEPINTVL", None)
_COUNT = getattr(socket, "TCP_KEEPCNT", None)


def apply(sock: Any, settings: Optional[Keepalive]) -> None:
    """Set ``settings`` on a TCP socket (nothing for unix sockets or None)."""
    if settings is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in ((_IDLE, settings.idle), (_INTERVAL, settings.interval),
                          (_COUNT, settings.count)):
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
