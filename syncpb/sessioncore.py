"""The sessions' state and hot paths: feeding the broker, a blocking call,
the server's read loop (layer L4.005).

Theory of operation
-------------------
:class:`SessionCore` is the base of every :class:`~syncpb.session.Session`:
it holds the state a call touches on its way through a session (the
socket, the broker, the lock guarding it, the calls waiting for answers,
the bytes waiting to be written) and :meth:`SessionCore.feed`, which hands
received bytes to the broker and settles what they complete.
:class:`ThreadedCore` adds what a blocking call on a
:class:`~syncpb.threaded.ThreadedSession` does from start to end: encode
and write the call, lead (read the socket until its answer is in:
:mod:`syncpb.leading`), resign, return. :class:`_Follower` is one waiting
caller. Everything else (policies, waiting for others, greenlets, loss) is
the sessions', reached through ``self``.

:class:`GreenCore` is the same for a :class:`~syncpb.green.GreenSession`
(the server's): its read loop and the calls it runs inline.

This module is the reference. ``syncpb/_csessioncore.pyx`` is its compiled
twin, the same methods with the state in C fields, used unless
``SYNCPB_PURE=1`` or it was not built (see :mod:`syncpb.speedups`); the
session suites run against both.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .deferred import Deferred
from .errors import STALE_REFERENCE, DeadReferenceError
from .events import AnswerReceived, CallReceived, ErrorReceived, ProtocolViolation, Ready
from .dispatch import before_blocking
from .failure import Failure
from .incoming import is_blocking
from .sendqueue import _DONTWAIT
from . import transport
from .transport import read_buffer, wait_readable
from .waiting import cooperative_hub, poll_readable, real

if TYPE_CHECKING:  # pragma: no cover
    from .broker import Broker

__all__ = ["SessionCore", "ThreadedCore", "GreenCore", "_Follower"]

log = logging.getLogger("syncpb")

_allocate_lock = real("_thread", "allocate_lock")
_get_ident = real("_thread", "get_ident")
_monotonic = time.monotonic
_modules = sys.modules
#: Yields in a row that found the socket still empty before a connection
#: stops yielding (see :meth:`GreenCore._look_again`) ...
YIELD_MISSES = 4
#: ... and then tries again once every this many empty reads.
YIELD_PROBE = 64
_sched_yield = getattr(os, "sched_yield", None)


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


class SessionCore:
    """The state and the receiving hot path of a session (its base)."""

    sock: Any
    broker: Broker
    name: str
    closed: bool
    ready: Any
    _raw_sock: Any
    _reads_into: bool
    _lock: Any
    _pending: Dict[int, Any]
    _queue: List[Any]
    _lost_done: bool
    _send_mutex: Any

    if TYPE_CHECKING:  # the session's own, reached through self
        def _dispatch(self, call: CallReceived) -> None: ...
        def _flush(self) -> None: ...
        def _lost(self, reason: str, cause: Optional[BaseException]) -> None: ...

    def feed(self, data: Optional[bytes]) -> None:
        """Process received bytes (None: the message :meth:`_read_rest`
        completed): resolve answers, dispatch calls."""
        answers: List[Tuple[Any, Any, bool]] = []
        violation: Optional[ProtocolViolation] = None
        ready = False
        with self._lock:
            broker = self.broker
            events = broker.receive_data(data) if data is not None else broker.receive_buffered()
            if broker.has_output:
                self._queue.extend(broker.pieces_to_send())
            for event in events:
                kind = type(event)
                if kind is CallReceived:
                    self._dispatch(event)  # under the lock: calls start in arrival order
                elif kind is AnswerReceived or kind is ErrorReceived:
                    d = self._pending.pop(event.request_id, None)
                    if d is not None:
                        answers.append((d, event.value if kind is AnswerReceived else event.error,
                                        kind is AnswerReceived))
                elif kind is ProtocolViolation:
                    violation = event
                elif kind is Ready:
                    ready = True
        if self._queue:
            self._flush()
        if ready and not self.ready.called:
            self.ready.callback(True)  # (a failed first write may have ended it)
        for d, value, ok in answers:
            if ok:
                d.callback(value)
            else:
                d.errback(Failure(value))
        if violation is not None:
            log.warning("closing PB connection %s: %s", self.name, violation.error)
            self._lost(f"protocol violation: {violation.error}", violation.error)


class ThreadedCore(SessionCore):
    """A blocking call on a threaded session, from start to end (its base)."""

    _state: Any
    _leader: Optional[_Follower]
    _leader_thread: Optional[int]
    _followers: List[_Follower]
    _released_at: float
    _green_waiting: int
    _idle: Any
    _wake_r: int
    _wake_fds: Tuple[int, ...]

    if TYPE_CHECKING:  # the session's own, reached through self
        def _call_blocking_green(self, oid: Any, name: str, args: Tuple[Any, ...],
                                 kwargs: Dict[str, Any], timeout: Optional[float]) -> Any: ...
        def _write(self, pieces: Any) -> bool: ...
        def _wait(self, me: _Follower, deadline: Optional[float],
                  interruptible: bool = False) -> None: ...
        def _outcome(self, slot: Any, request_id: int, name: str,
                     timeout: Optional[float]) -> Any: ...
        def _wake_next_locked(self) -> None: ...
        def _recv(self, sock: Any) -> Optional[bytes]: ...
        def _internal_error(self, exc: Exception) -> None: ...

    def call_blocking(self, oid: Any, name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                      timeout: Optional[float] = None) -> Any:
        """Call and wait for the answer without a Deferred (the fast path).

        Raises:
            the remote exception, CallTimeout, ConnectionLost,
            DeadReferenceError, or the local error of an unsendable argument.
        """
        if "gevent._hub_local" in _modules and cooperative_hub() is not None:
            return self._call_blocking_green(oid, name, args, kwargs, timeout)
        slot = _Follower()
        send_mutex = self._send_mutex
        with self._lock:
            if self.closed:
                raise DeadReferenceError(STALE_REFERENCE)
            broker = self.broker
            request_id = broker.call(oid, name, args, kwargs)
            self._pending[request_id] = slot
            pieces = broker.pieces_to_send()
            # Nothing queued ahead and nobody writing (the usual case): write
            # the call from here. Taking the send lock before letting go of
            # the broker lock keeps messages in the order they were encoded.
            direct = not self._queue and send_mutex.acquire(False)
            if not direct:
                self._queue.extend(pieces)
        if direct:
            try:
                if len(pieces) == 1 and self._raw_sock is None:  # _write() written out
                    self.sock.sendall(pieces[0])
                else:
                    self._write(pieces)
            except OSError as exc:
                self._lost(f"write failed: {exc}", exc)
            finally:
                send_mutex.release()
            if self._queue:  # queued by a finalizer while we wrote
                self._flush()
        else:
            self._flush()
        before_blocking()
        deadline = None if timeout is None else _monotonic() + timeout
        state = self._state
        state.acquire()
        if self._leader is None:  # nobody reads: lead at once (the usual case)
            self._leader, self._leader_thread = slot, _get_ident()
            state.release()
            try:
                self._lead(slot, deadline)
            finally:
                self._resign()
        else:
            state.release()
        if not slot.done:
            self._wait(slot, deadline)
        elif slot.ok:  # the usual case, written out
            return slot.value
        return self._outcome(slot, request_id, name, timeout)

    def _read_rest(self, sock: Any, flags: int) -> Optional[bool]:
        """Read into the broker's buffer while it says so (``assemble``):
        True once a message is complete, or may be (a short read: see
        :attr:`~syncpb.assembly.Assembly.guess`), then ``feed(None)``;
        False when the socket has nothing more now (``flags``
        MSG_DONTWAIT; with 0, it waits); None when the connection has
        ended (it is torn down)."""
        assembly = self.broker.message_buffer()
        size = transport.READ_SIZE
        recv_into = sock.recv_into
        try:
            done = assembly.fill(recv_into, size, flags, _DONTWAIT)
            while done is None and not flags:  # all read is framed now: the next read waits
                done = assembly.fill(recv_into, size, flags, _DONTWAIT)
        except OSError as exc:
            self._lost(f"read failed: {exc}", exc)
            return None
        if done is None:
            return False
        if not done:
            self._lost("closed by peer", None)
            return None
        return True

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


class GreenCore(SessionCore):
    """The read loop of a gevent session, and the calls it runs inline
    (the base of :class:`~syncpb.green.GreenSession`)."""

    _reader: Any
    _calls: List[CallReceived]
    _batching: bool
    _draining: bool
    _yield_misses: int
    _check_unsent_at: int
    track_messages: bool
    message_started: Optional[float]
    offload: Any
    _watch: Any
    _gevent: Any
    _getcurrent: Any

    if TYPE_CHECKING:  # the session's own, reached through self
        def _lost(self, reason: str, exc: Optional[BaseException]) -> None: ...
        def _recv(self, sock: Any) -> Optional[bytes]: ...
        def _note_message(self) -> None: ...
        def _internal_error(self, exc: Exception) -> None: ...
        def _log_failure(self, call: CallReceived, exc: BaseException) -> None: ...
        def _reply(self, call: CallReceived, value: Any, ok: bool) -> None: ...
        def _answer_later(self, call: CallReceived) -> Any: ...
        def _fail_later(self, call: CallReceived) -> Any: ...
        def _write_queue_nowait(self) -> None: ...
        def _check_unsent(self) -> None: ...
        def _drain(self) -> None: ...

    def _yield_now(self) -> bool:
        """The socket was empty: give up the CPU to a peer that may share
        it, unless the misses so far say it is elsewhere (see
        :meth:`_look_again`). True when it did: read once more, and count
        a read that found nothing in :attr:`_yield_misses` (0 on a hit)."""
        if _sched_yield is None:
            return False
        misses = self._yield_misses
        if misses >= YIELD_MISSES and (misses - YIELD_MISSES) % YIELD_PROBE != YIELD_PROBE - 1:
            self._yield_misses = misses + 1  # (empty reads since the last hit)
            return False
        _sched_yield()
        return True

    def _look_again(self, recv_into: Any, view: memoryview, area: Any) -> Optional[bytes]:
        """The socket was empty: let a peer on this CPU run, then read once more.

        When client and server share a CPU (a one-CPU container, processes
        pinned together), the client is often still runnable after our
        answer woke it, and its next call comes only once it has run.
        Waiting for it on the hub costs a failed read, an ``epoll_wait``
        and two greenlet switches; giving up the CPU (``sched_yield``)
        lets the client read the answer and send the next call, which this
        read then finds (pinned W1: about 1.25x the calls per second).
        When the peer is elsewhere, the yield returns at once and finds
        nothing: after :data:`YIELD_MISSES` such misses in a row a
        connection yields only once every :data:`YIELD_PROBE` empty reads,
        so a remote peer costs a yield and a read now and then.

        Returns the bytes read (``b""`` at the end of the stream or on an
        error, which ``_recv`` then reports), or None: wait on the hub."""
        if not self._yield_now():
            return None
        try:
            count = recv_into(area)
        except BlockingIOError:
            self._yield_misses += 1
            return None
        except OSError:
            return b""
        self._yield_misses = 0
        return view[:count].tobytes()

    def _read_now(self, recv_into: Any, view: memoryview, area: Any) -> Optional[bytes]:
        """Read the non-blocking socket (``recv_into``, None when there is
        none) once, and once more after a yield (:meth:`_look_again`):
        the bytes read; None when there is nothing now (wait); b"" at the
        end of the stream or on an error (gevent's recv then says which)."""
        if recv_into is None:
            return b""
        try:
            return view[:recv_into(area)].tobytes()
        except BlockingIOError:
            return self._look_again(recv_into, view, area)
        except OSError:
            return b""

    def _read_rest_green(self, raw: Any, sock: Any) -> bool:
        """The read loop while messages come in pieces: fill the broker's
        buffer from gevent's non-blocking socket (``raw``, under ``sock``),
        and when it is empty wait (this greenlet only) until it is
        readable. True once the message is complete, or may be (see
        :attr:`~syncpb.assembly.Assembly.guess`); False when the
        connection ended or cannot be waited on (the read loop's plain
        path then finds out why). Before waiting for the next message's
        first bytes it yields to a peer that may share the CPU, as
        :meth:`_look_again` does."""
        assembly = self.broker.message_buffer()
        size = transport.READ_SIZE
        recv_into = raw.recv_into
        yielded = False
        while True:
            try:
                done = assembly.fill(recv_into, size, 0, 0)
            except OSError as exc:
                self._lost(f"read failed: {exc}", exc)
                return False
            if yielded:  # the read after a yield: a hit, or a miss
                yielded = False
                if done or assembly.filled:
                    self._yield_misses = 0
                else:
                    self._yield_misses += 1
            elif done is None and not assembly.filled and self._yield_now():
                yielded = True
                continue
            if done:
                return True
            if done is not None:
                self._lost("closed by peer", None)
                return False
            if assembly.filled and self.track_messages and self.message_started is None:
                self.message_started = _monotonic()  # a message begun waits
            try:
                if wait_readable(sock) and not self._lost_done:
                    continue
            except OSError:  # closed while waiting
                pass
            return False

    def run(self) -> None:
        """Read and run calls until the connection ends, or until a call
        run here waits and another greenlet takes over (never raises)."""
        me = self._getcurrent()
        self._reader = me
        self._flush()
        sock, watched = self.sock, self._watch.watched
        raw, broker = self._raw_sock, self.broker
        recv_into = raw.recv_into if raw is not None else None
        view, area = read_buffer()  # this hub's thread's
        data: Optional[bytes]
        while not self._lost_done and self._reader is me:
            if self._calls:
                data = b""
            elif broker.assemble and raw is not None:  # messages come in pieces here
                if self._read_rest_green(raw, sock):
                    data = None  # the message is in the broker's buffer
                elif self._lost_done:
                    return
                else:  # it could not wait: gevent's recv waits, or says why not
                    data = self._recv(sock)
                    if data is None:
                        return
            else:
                # Read the non-blocking socket under gevent's directly: data
                # is usually waiting. When it is not, wait on the hub until
                # the socket is readable and read again; at the end or on an
                # error, gevent's recv reports which.
                data = self._read_now(recv_into, view, area)
                if data is None:
                    try:
                        if wait_readable(sock):
                            continue
                    except OSError:  # closed while waiting: gevent's recv says so
                        pass
                if not data:
                    data = self._recv(sock)
                    if data is None:
                        return
            watched[me] = self
            try:
                if data is None or data:
                    self.feed(data)
                    if self.track_messages:
                        self._note_message()
                if self._calls:
                    self._run_calls(me)
            except Exception as exc:  # never let an error escape into the hub
                self._internal_error(exc)
            finally:
                watched.pop(me, None)

    def _run_calls(self, me: Any) -> None:
        """Run the queued calls in order; answers go out in one write after
        the batch (:meth:`Session.run_call` written out for the usual call
        that returns a plain value at once)."""
        calls, lock, broker, queue = self._calls, self._lock, self.broker, self._queue
        offload = self.offload
        self._batching = True
        try:
            while calls and self._reader is me:
                call = calls.pop(0)
                try:
                    if offload is not None and (offload.everything or is_blocking(call.method)):
                        result = offload.submit(call.method, call.args, call.kwargs)
                    elif call.kwargs:
                        result = call.method(*call.args, **call.kwargs)
                    else:
                        result = call.method(*call.args)
                except BaseException as exc:
                    self._log_failure(call, exc)
                    self._reply(call, exc, False)
                    continue
                if isinstance(result, Deferred):
                    result.addCallbacks(self._answer_later(call), self._fail_later(call))
                    continue
                if call.answer_required:
                    with lock:
                        if self._lost_done:
                            return
                        broker.answer(call.request_id, result, call.perspective)
                        queue.extend(broker.pieces_to_send())
                if self._reader is not me:  # the call waited: another greenlet reads now
                    self._flush()
        finally:
            if self._reader is me:
                self._batching = False
        if queue and self._reader is me and not self._draining:
            # _write_or_hand_off() written out; a write that does not wait
            # never switches, so a free send lock need not be taken
            if self._send_mutex.locked():
                with self._send_mutex:
                    self._write_queue_nowait()
            else:
                self._write_queue_nowait()
            if queue and not self._lost_done:
                if len(queue) >= self._check_unsent_at:
                    self._check_unsent()
                    if self._lost_done:
                        return
                self._draining = True
                self._gevent.spawn_raw(self._drain)
