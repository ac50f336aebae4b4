"""A session for plain OS threads: callers take turns reading (layer L4).

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

Someone must still read when nobody waits: answers to callback-style calls,
the peer's calls to our Referenceables, a close by the peer. A background
thread takes the lead once the connection has had no leader for a grace
period (a few milliseconds); it waits in ``select`` on the socket and on a
wake-up pipe, and steps aside through that pipe as soon as a caller wants
to lead. In a busy loop of calls it therefore never gets in the way.

A callback that runs on the leader and waits again leads re-entrantly on
the same thread. Incoming calls run on an
:class:`~syncpb.dispatch.OrderedDispatcher`, never on the reading thread.
"""

from __future__ import annotations

import os
import select
import time
from typing import Any, List, Optional

from .broker import Broker, CallReceived
from .deferred import Deferred
from .dispatch import OrderedDispatcher, blocking_section
from .session import RECV_SIZE, Session, _allocate_lock, _get_ident, real

__all__ = ["ThreadedSession"]

#: How long the connection must be leaderless before the background reader leads.
GRACE = 0.002
_Thread = real("threading", "Thread")
_monotonic = time.monotonic


class _Follower:
    """One waiting caller: a lock that is released to wake it."""

    __slots__ = ("lock", "done")

    def __init__(self) -> None:
        self.lock = _allocate_lock()
        self.lock.acquire()
        self.done = False

    def wake(self) -> None:
        try:
            self.lock.release()
        except RuntimeError:  # already awake
            pass

    def settled(self) -> None:
        self.done = True
        self.wake()


_BACKGROUND = _Follower()


class ThreadedSession(Session):
    """A session whose waiting callers read the socket themselves."""

    def __init__(self, sock: Any, broker: Broker, name: str = "") -> None:
        self._state = _allocate_lock()
        self._send = _allocate_lock()
        self._leader: Optional[_Follower] = None
        self._leader_thread: Optional[int] = None
        self._followers: List[_Follower] = []
        self._released_at = 0.0
        self._interrupted = False
        self._wake_r, self._wake_w = os.pipe()
        self._idle = _allocate_lock()
        self._idle.acquire()
        self._dispatcher = OrderedDispatcher(f"syncpb-{name}")
        self.waiter = self
        super().__init__(sock, broker, name)
        self._background = _Thread(target=self._read_in_background,
                                   name=f"syncpb-reader-{name}", daemon=True)

    def start(self) -> None:
        """Start the background reader (after the handshake)."""
        self._background.start()

    def _send_lock(self) -> Any:
        return self._send

    def _dispatch(self, call: CallReceived) -> None:
        self._dispatcher.submit(lambda: self.run_call(call))

    # ------------------------------------------------------------ waiting

    def wait(self, deferred: Deferred, timeout: Optional[float]) -> None:
        """Block until ``deferred`` settles, reading the socket when we may lead."""
        deadline = None if timeout is None else _monotonic() + timeout
        me = _Follower()
        deferred._add_settled_hook(me.settled)
        try:
            with blocking_section():
                self._wait(me, deadline)
        finally:
            deferred._remove_settled_hook(me.settled)

    def _wait(self, me: _Follower, deadline: Optional[float]) -> None:
        while not me.done and not self._lost_done:
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                return
            role = self._try_lead(me)
            if role == "lead":
                try:
                    self._lead(me, deadline)
                finally:
                    self._resign()
            elif role == "nested":
                self._lead(me, deadline)
            else:
                me.lock.acquire(True, -1 if remaining is None else remaining)
                with self._state:
                    if me in self._followers:
                        self._followers.remove(me)

    def _try_lead(self, me: _Follower) -> str:
        with self._state:
            if self._leader is None:
                self._leader, self._leader_thread = me, _get_ident()
                return "lead"
            if self._leader_thread == _get_ident():
                return "nested"
            self._followers.append(me)
            if self._leader is _BACKGROUND and not self._interrupted:
                self._interrupted = True
                os.write(self._wake_w, b"x")
            return "follow"

    def _resign(self) -> None:
        with self._state:
            self._leader = self._leader_thread = None
            self._released_at = _monotonic()
            for follower in self._followers:
                if not follower.done:
                    follower.wake()
                    break

    def _lead(self, me: _Follower, deadline: Optional[float]) -> None:
        sock = self.sock
        while not me.done and not self._lost_done:
            if deadline is not None:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    return
                ready, _, _ = select.select([sock], [], [], remaining)
                if not ready:
                    return
            if not self._receive_once(sock):
                return

    def _receive_once(self, sock: Any) -> bool:
        try:
            data = sock.recv(RECV_SIZE)
        except OSError as exc:
            self._lost(f"read failed: {exc}", exc)
            return False
        if not data:
            self._lost("closed by peer", None)
            return False
        self.feed(data)
        return True

    # ------------------------------------------------------------ background

    def _read_in_background(self) -> None:
        try:
            self._background_loop()
        finally:
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _background_loop(self) -> None:
        while not self._lost_done:
            with self._state:
                idle = (self._leader is None and not self._followers
                        and _monotonic() - self._released_at >= GRACE)
                if idle:
                    self._leader, self._leader_thread = _BACKGROUND, _get_ident()
                    self._interrupted = False
            if not idle:
                self._idle.acquire(True, GRACE)
                continue
            try:
                self._read_until_wanted()
            except Exception as exc:  # never die silently
                self._lost(f"internal error: {exc}", exc)
            finally:
                self._resign()

    def _read_until_wanted(self) -> None:
        sock, wake = self.sock, self._wake_r
        while not self._lost_done:
            ready, _, _ = select.select([sock, wake], [], [])
            if wake in ready:
                os.read(wake, 64)
                return
            if not self._receive_once(sock):
                return
            if self._followers:
                return

    def _kick(self) -> None:
        self._try_flush()

    def _closed_socket(self) -> None:
        self._dispatcher.close()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        try:
            self._idle.release()
        except RuntimeError:
            pass
        with self._state:
            followers = list(self._followers)
        for follower in followers:
            follower.wake()
        if not self._background.is_alive() and self._background.ident is None:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_w = -1
        super()._closed_socket()
