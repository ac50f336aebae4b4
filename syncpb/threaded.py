"""A session for plain OS threads: callers take turns reading (layer L4).

Theory of operation
-------------------
A caller that waits for its answer reads the socket itself, so that no
thread hand-off costs a wake-up per call: waiting threads take turns as
the *leader*, which reads for all of them (:mod:`syncpb.leading`).

Someone must still read when nobody waits: answers to callback-style calls,
the peer's calls to our Referenceables, a close by the peer. A background
thread takes the lead once the connection has had no leader for a grace
period (a few milliseconds), or at once when a resigning leader leaves
calls in flight that nobody waits for; it waits in ``poll`` on the socket
and on a wake-up pipe, and steps aside through that pipe as soon as a
caller wants to lead.

Writes of callback-style calls made while earlier calls are still in
flight are held back and sent together by the next thread that waits (or
by the background reader within :data:`MAX_NAP`), as Twisted's reactor
coalesces writes made in one pass of its loop. While callers keep leading it checks back less and
less often (up to :data:`MAX_NAP`), so a busy loop of calls is not
disturbed; unsolicited calls from the peer after such a burst are read
within that interval.

Incoming calls run on an :class:`~syncpb.dispatch.OrderedDispatcher`,
never on the reading thread.

Greenlets
---------
A caller inside a running gevent hub (:func:`syncpb.waiting.cooperative_hub`)
never reads and never blocks its OS thread: it writes without blocking
(what the socket does not take at once is left to the background thread),
asks the background reader to lead at once, and waits on a
:class:`~syncpb.waiting.Wakeup`, so only its greenlet waits. The answer is
read by whichever thread leads. A Deferred from ``callRemote`` made in a
greenlet fires in that greenlet's hub, where its callbacks run. So one
connection serves OS threads and greenlets of several hubs at once, and a
hub that stops running (its thread blocked in plain code) holds up only its
own greenlets. That side lives in :mod:`syncpb.greencallers`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

from .broker import Broker, CallReceived
from .deferred import Deferred
from .dispatch import OrderedDispatcher, before_blocking
from .errors import CallTimeout, ConnectionLost, format_seconds
from .greencallers import GreenCallers
from .leading import _BACKGROUND, LeaderFollower
from .osthreads import OSThread
from .session import _DONTWAIT, Session, ThreadedCore, _allocate_lock, _Follower, _get_ident
from .waiting import Wakeup, cooperative_hub, poll_readable

__all__ = ["ThreadedSession"]


#: How long the connection must be leaderless before the background reader leads.
GRACE = 0.002
#: Longest the background reader sleeps between checks while callers lead.
MAX_NAP = 0.005
_monotonic = time.monotonic


class ThreadedSession(ThreadedCore, GreenCallers, LeaderFollower, Session):
    """A session whose waiting threads read the socket themselves (taking
    turns: :class:`~syncpb.leading.LeaderFollower`; greenlets only wait:
    :class:`~syncpb.greencallers.GreenCallers`)."""

    def __init__(self, sock: Any, broker: Broker, name: str = "") -> None:
        self._state = _allocate_lock()
        self._send_mutex = _allocate_lock()
        self._leader: Optional[_Follower] = None
        self._leader_thread: Optional[int] = None
        self._followers: List[_Follower] = []
        self._released_at = 0.0
        self._interrupted = False
        self._wake_r, self._wake_w = os.pipe()
        self._wake_fds: Tuple[int, ...] = (self._wake_r, self._wake_w)  # () once closed
        self._started = False
        self._green_waiting = 0   # greenlets waiting: the background reader leads at once
        self._urgent = False      # a greenlet's callRemote wants a reader now
        self._idle = _allocate_lock()
        self._idle.acquire()
        self._dispatcher = OrderedDispatcher(f"syncpb-{name}")
        self.waiter = self
        super().__init__(sock, broker, name)
        self._background = OSThread(self._read_in_background, f"syncpb-reader-{name}")

    def start(self) -> None:
        """Start the background reader (after the handshake)."""
        with self._state:
            if self._lost_done or self._started:
                return
            self._started = True
        self._background.start()


    def _sent_call(self) -> None:
        if cooperative_hub() is not None:
            self._flush_green()
            with self._state:
                self._urgent = True
            self._poke_background(write=False)
            return
        # Like Nagle's rule: while earlier calls are still in flight, hold a
        # callback-style call back; it goes out with the next wait, or from
        # the background reader within MAX_NAP. Pipelined calls then share
        # one write and the peer reads them in one go.
        if len(self._pending) <= 1:
            self._flush()

    def _dispatch(self, call: CallReceived) -> None:
        self._dispatcher.submit(lambda: self.run_call(call))

    # ------------------------------------------------------------ waiting

    def wait(self, deferred: Deferred, timeout: Optional[float]) -> None:
        """Block until ``deferred`` settles, reading the socket when we may
        lead (a greenlet only waits: see the module's notes)."""
        if cooperative_hub() is not None:
            wakeup = Wakeup()
            deferred._add_settled_hook(wakeup.set)
            try:
                before_blocking()
                self._green_wait(wakeup, timeout)
            finally:
                deferred._remove_settled_hook(wakeup.set)
            return
        deadline = None if timeout is None else _monotonic() + timeout
        me = _Follower()

        def settled() -> None:
            # Often settled by an incoming call on the dispatcher thread
            # (paging, callbacks): if this waiter is reading, wake it.
            me.settled()
            if self._leader is me:
                self._poke()

        deferred._add_settled_hook(settled)
        try:
            before_blocking()
            if self._queue:
                self._flush()
            self._wait(me, deadline, interruptible=True)
        finally:
            deferred._remove_settled_hook(settled)

    def _poke(self) -> None:
        """Wake whoever waits in ``poll`` on the wake-up pipe."""
        with self._state:
            if self._wake_fds:
                os.write(self._wake_w, b"x")

    def _outcome(self, slot: Any, request_id: int, name: str, timeout: Optional[float]) -> Any:
        """The answer in ``slot``; or, when none came, why (ConnectionLost
        or CallTimeout, the call forgotten)."""
        if not slot.done:
            with self._lock:
                self._pending.pop(request_id, None)
            if not slot.done:  # not answered while we took the lock
                if self._lost_done:
                    raise ConnectionLost(f"connection to {self.name} lost during {name!r}")
                raise CallTimeout(f"no answer to {name!r} within {format_seconds(timeout)}")
        if slot.ok:
            return slot.value
        raise slot.value

    # ------------------------------------------------------------ greenlets

    def _poke_background(self, write: bool) -> None:
        """Wake the background thread: to lead now, or (``write``) to send
        what is queued even while it is reading."""
        with self._state:
            if write and self._leader is _BACKGROUND and self._wake_fds \
                    and not self._interrupted:
                self._interrupted = True
                os.write(self._wake_w, b"x")
        try:
            self._idle.release()
        except RuntimeError:  # already woken
            pass

    def _flush(self) -> None:
        if cooperative_hub() is not None:
            self._flush_green()
            return
        with self._send_mutex:
            self._write_queue()

    # ------------------------------------------------------------ background

    def _receive_once(self, sock: Any) -> bool:
        data: Optional[bytes]
        if self.broker.assemble and self._reads_into:
            done = self._read_rest(sock, _DONTWAIT)  # what is there now
            if not done:
                return done is not None
            data = None
        else:
            data = self._recv(sock)
            if data is None:
                return False
            if not data:
                return True
        try:
            self.feed(data)
        except Exception as exc:  # a bug of ours ends this connection, not the caller
            self._internal_error(exc)
            return False
        return True

    def _read_in_background(self) -> None:
        try:
            self._background_loop()
        finally:
            self._close_wake_pipe()

    def _close_wake_pipe(self) -> None:
        with self._state:
            fds, self._wake_fds = self._wake_fds, ()
        for fd in fds:
            os.close(fd)

    def _background_loop(self) -> None:
        nap = GRACE
        while not self._lost_done:
            with self._state:
                busy = self._leader is not None or bool(self._followers)
                wanted = self._green_waiting > 0 or self._urgent
                idle = not busy and (wanted or _monotonic() - self._released_at >= GRACE)
                if idle:
                    self._leader, self._leader_thread = _BACKGROUND, _get_ident()
                    self._interrupted = False
                    self._urgent = False
            if self._queue:
                self._flush()  # calls held back while others were in flight
            if not idle:
                # Back off while callers keep leading.
                nap = min(nap * 2, MAX_NAP) if busy else GRACE
                self._idle.acquire(True, nap)
                continue
            nap = GRACE
            try:
                self._read_until_wanted()
            except Exception as exc:  # never die silently
                self._lost(f"internal error: {exc}", exc)
            finally:
                self._resign()

    def _read_until_wanted(self) -> None:
        sock, wake = self.sock, self._wake_r
        while not self._lost_done:
            # fileno() each time: a socket closed meanwhile gives -1 (an error),
            # never a number the process has since reused for another file
            ready = poll_readable([sock.fileno(), wake], None)
            if wake in ready:
                os.read(wake, 64)
                return
            if not self._receive_once(sock):
                return
            if self._followers:
                return

    def _kick(self) -> None:
        if cooperative_hub() is None:
            self._try_flush()
            return
        if self._lock.acquire(False):
            try:
                self._enqueue_locked()
            finally:
                self._lock.release()
        self._flush_green()

    def _closed_socket(self) -> None:
        self._dispatcher.close()
        with self._state:
            if self._wake_fds:
                os.write(self._wake_w, b"x")
        try:
            self._idle.release()
        except RuntimeError:
            pass
        with self._state:
            followers = list(self._followers)
        for follower in followers:
            follower.wake()
        if not self._started:
            self._close_wake_pipe()
        super()._closed_socket()
