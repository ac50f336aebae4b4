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
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from .session import _DONTWAIT, _allocate_lock, _get_ident
from .transport import read_buffer
from .waiting import poll_readable

if TYPE_CHECKING:  # pragma: no cover
    from .broker import Broker

__all__ = ["LeaderFollower"]

_monotonic = time.monotonic


class _Follower:
    """One waiting caller: a lock that is released to wake it.

    It doubles as the pending entry of a blocking call: the session
    resolves it with :meth:`callback`/:meth:`errback` like a Deferred, so a
    blocking call needs no Deferred at all. The lock is made only when the
    caller has to wait for someone else (:meth:`arm`); a caller that leads
    at once, the usual case, never needs one.
    """

    __slots__ = ("lock", "done", "value", "ok")

    def __init__(self) -> None:
        self.lock: Any = None
        self.done = False
        self.value: Any = None
        self.ok = False

    def arm(self) -> None:
        """Make the (held) lock this caller will sleep on; before it checks
        :attr:`done` (a wake-up that came earlier found no lock to release)."""
        if self.lock is None:
            lock = _allocate_lock()
            lock.acquire()
            self.lock = lock

    def callback(self, value: Any) -> None:
        self.value, self.ok, self.done = value, True, True
        if self.lock is not None:  # it sleeps (else it sees ``done`` before it would)
            self.wake()

    def errback(self, failure: Any) -> None:
        self.value, self.ok, self.done = failure.value, False, True
        self.wake()

    def wake(self) -> None:
        lock = self.lock
        if lock is None:  # not sleeping: it sees ``done`` before it would sleep
            return
        try:
            lock.release()
        except RuntimeError:  # already awake
            pass

    def settled(self) -> None:
        self.done = True
        self.wake()


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

    def _resign(self) -> None:
        with self._state:
            self._leader = self._leader_thread = None
            self._released_at = _monotonic()
            if self._followers:
                self._wake_next_locked()
            elif self._green_waiting:
                try:
                    self._idle.release()  # greenlets wait: the background thread reads now
                except RuntimeError:
                    pass

    def _lead(self, me: _Follower, deadline: Optional[float],
              interruptible: bool = False) -> None:
        """Read until ``me`` is done. A blocking call's answer comes over the
        socket, so it just reads (in recv); a call with a ``deadline`` or an
        ``interruptible`` waiter (a Deferred settled by anything, which
        also wakes on the pipe: see :meth:`_poke`) polls first."""
        sock, broker, reads_into = self.sock, self.broker, self._reads_into
        polls = deadline is not None or interruptible
        fill_flags = _DONTWAIT if polls else 0  # (without polling, a read waits)
        view, area = read_buffer()
        while not me.done and not self._lost_done:
            if polls:
                remaining = None if deadline is None else deadline - _monotonic()
                if remaining is not None and remaining <= 0:
                    return
                wake = self._wake_r if interruptible and self._wake_fds else None
                try:
                    fd = sock.fileno()
                    ready = poll_readable([fd] if wake is None else [fd, wake], remaining)
                except (OSError, ValueError):  # closed under us: the loop sees it
                    return
                if wake is not None and wake in ready:
                    try:
                        os.read(wake, 64)
                    except OSError:
                        return
                    continue
                if not ready:
                    return
            data: Optional[bytes]
            if broker.assemble and reads_into:  # messages come in pieces here
                done = self._read_rest(sock, fill_flags)
                if done is None:
                    return
                if not done:
                    continue  # (the loop waits for more)
                data = None  # the message is in the broker's buffer
            elif reads_into:  # the hot loop of a blocking call: _recv() written out
                try:
                    data = view[:sock.recv_into(area)].tobytes()
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._lost(f"read failed: {exc}", exc)
                    return
                if not data:
                    self._lost("closed by peer", None)
                    return
            else:
                data = self._recv(sock)
                if data is None:
                    return
                if not data:
                    continue
            try:
                self.feed(data)
            except Exception as exc:
                self._internal_error(exc)
                return
