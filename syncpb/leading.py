"""Waiting threads take turns reading a threaded session (layer L4).

Theory of operation
-------------------
Handing every answer from a reader thread to the waiting caller costs a
thread wake-up per call, which is most of a small call's round trip. So a
caller that waits for its answer reads the socket itself: the first waiter
becomes the *leader* and reads and decodes everything that arrives,
resolving other callers' Deferreds and waking them (the *followers*). When
the leader's own answer has arrived it resigns and wakes one follower still
waiting, which leads next. A single-threaded script therefore sends,
receives and decodes on its own thread with no hand-off at all.

A callback that runs on the leader and waits again leads re-entrantly on
the same thread. When nobody waits, the session's background thread leads
(:data:`_BACKGROUND`); a caller that wants to lead wakes it through the
wake-up pipe, and it steps aside (see :mod:`syncpb.threaded`).

Leading itself (``_lead``, reading until one's answer is in, and
``_resign``) is on the hot path of every blocking call, so it lives in
:class:`syncpb.sessioncore.ThreadedCore` (compiled when built); this
module has the rest: taking turns, following, waking the next.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from .session import _Follower, _get_ident

if TYPE_CHECKING:  # pragma: no cover
    from .broker import Broker

__all__ = ["LeaderFollower"]

_monotonic = time.monotonic


#: The leader while the session's background thread reads (it never waits on it).
_BACKGROUND = _Follower()


class LeaderFollower:
    """The leader/follower side of :class:`~syncpb.threaded.ThreadedSession`
    (a mixin: it uses the session's socket, broker, state lock, wake-up pipe
    and reading methods)."""

    # provided by the session
    sock: Any
    broker: Broker
    _state: Any
    _idle: Any
    _leader: Optional[_Follower]
    _leader_thread: Optional[int]
    _followers: List[_Follower]
    _released_at: float
    _interrupted: bool
    _wake_r: int
    _wake_w: int
    _wake_fds: Tuple[int, ...]
    _green_waiting: int
    _lost_done: bool
    _reads_into: bool
    feed: Any
    _lead: Any  # ThreadedCore's
    _resign: Any  # ThreadedCore's
    _recv: Any
    _read_rest: Any
    _lost: Any
    _internal_error: Any

    def _wait(self, me: _Follower, deadline: Optional[float],
              interruptible: bool = False) -> None:
        while not me.done and not self._lost_done:
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                return
            role = self._try_lead(me)
            if role == "lead":
                try:
                    self._lead(me, deadline, interruptible)
                finally:
                    self._resign()
            elif role == "nested":
                self._lead(me, deadline, interruptible)
            else:
                if not me.done:  # armed in _try_lead: a later wake-up releases the lock
                    me.lock.acquire(True, -1 if remaining is None else remaining)
                with self._state:
                    if me in self._followers:
                        self._followers.remove(me)
                    leaving = me.done or (deadline is not None and _monotonic() >= deadline)
                    if leaving and self._leader is None:
                        self._wake_next_locked()  # the wake-up may have been meant to lead

    def _wake_next_locked(self) -> None:
        """Wake one follower still waiting, so that someone leads (state lock held)."""
        for follower in self._followers:
            if not follower.done:
                follower.wake()
                return

    def _try_lead(self, me: _Follower) -> str:
        with self._state:
            if self._leader is None:
                self._leader, self._leader_thread = me, _get_ident()
                return "lead"
            if self._leader_thread == _get_ident():
                return "nested"
            me.arm()
            self._followers.append(me)
            if self._leader is _BACKGROUND and not self._interrupted and self._wake_fds:
                self._interrupted = True
                os.write(self._wake_w, b"x")
            return "follow"
