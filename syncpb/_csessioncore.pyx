# cython: language_level=3
"""The sessions' core compiled: the twin of syncpb/sessioncore.py (layer L4.005).

Theory of operation
-------------------
The same classes as :mod:`syncpb.sessioncore`, method for method and line
for line, so that both behave alike (the session suites run on both:
TWIN_TESTS in the Makefile). What compiling buys is the state: the
attributes a call touches on its way through a session are C fields of
the instance, typed where their type never changes, and a waiting caller
(:class:`_Follower`) is a small C object. Everything else stays in Python,
in the session classes, reached through ``self``. Two things only this
twin does: it reads and writes plain sockets from their descriptors
(:mod:`syncpb._csockio`; the pure twin calls the socket's methods), and
it calls the compiled broker core through its C interface
(``_cbrokercore.pxd``), and the sessions' locks are
:class:`syncpb._csockio.Lock`, taken and let go as C calls (``_csockio.pxd``).

Keep the two in step: a change to one is a change to both.
"""

import logging
import os
import sys
import time

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.object cimport PyObject_GenericGetAttr
from libc.errno cimport EAGAIN, EINTR, errno
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from ._cbrokercore cimport BrokerCore
from ._csockio cimport (EWOULDBLOCK, _address, _os_error, _recv_now, _send_all, attempt,
                        c_send, fd_of, fill_direct, give, reads_plain, sendalls_plain,
                        sends_plain, take, timeout_of)

from .deferred import Deferred
from .errors import STALE_REFERENCE, DeadReferenceError
from .events import AnswerReceived, CallReceived, ErrorReceived, ProtocolViolation, Ready
from .dispatch import _working as _dispatch_working_object
from .dispatch import before_blocking
from .failure import Failure
from .incoming import is_blocking
from .sendqueue import _DONTWAIT
from . import transport
from .transport import read_buffer, wait_readable
from .waiting import cooperative_hub, poll_readable, real

log = logging.getLogger("syncpb")

_allocate_lock = real("_thread", "allocate_lock")
_get_ident = real("_thread", "get_ident")
_monotonic = time.monotonic
_modules = sys.modules
cdef dict _dispatch_working = _dispatch_working_object


cdef extern from "pythread.h":
    # what the real _thread.get_ident() returns, without the call
    unsigned long PyThread_get_thread_ident() nogil


cdef inline double _now() noexcept:
    """``time.monotonic()`` (the same clock, read in C)."""
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec + now.tv_nsec * 1e-9
# as in sessioncore.py
YIELD_MISSES = 4
YIELD_PROBE = 64
_sched_yield = getattr(os, "sched_yield", None)


def blocking_method(str name):
    """The twin of :func:`syncpb.reference._blocking_method` (its pure
    version lives there, below the sessions): the blocking proxy method
    for remote method ``name``, which sessions hand to
    :class:`~syncpb.reference.RemoteReference` (``Session.blocking_method``)
    when this module is built."""

    def blocking_call(self, *args, **kwargs):
        # (the reference's slots read without its class's __getattr__ hook)
        session = PyObject_GenericGetAttr(self, "_pb_session")
        if session.closed:
            raise DeadReferenceError(STALE_REFERENCE)
        return _call_blocking(session, PyObject_GenericGetAttr(self, "_pb_record").oid, name,
                              args, kwargs, session.call_timeout)

    blocking_call.__name__ = blocking_call.__qualname__ = name
    return blocking_call


cdef class _Follower:
    """One waiting caller: a lock that is released to wake it.

    It doubles as the pending entry of a blocking call: the session
    resolves it with :meth:`callback`/:meth:`errback` like a Deferred, so a
    blocking call needs no Deferred at all. The lock is made only when the
    caller has to wait for someone else (:meth:`arm`); a caller that leads
    at once, the usual case, never needs one.
    """

    cdef public object lock
    cdef public object value
    cdef public bint done
    cdef public bint ok

    def arm(self):
        """Make the (held) lock this caller will sleep on; before it checks
        :attr:`done` (a wake-up that came earlier found no lock to release)."""
        if self.lock is None:
            lock = _allocate_lock()
            lock.acquire()
            self.lock = lock

    cpdef callback(self, value):
        self.value, self.ok, self.done = value, True, True
        if self.lock is not None:  # it sleeps (else it sees ``done`` before it would)
            self.wake()

    cpdef errback(self, failure):
        self.value, self.ok, self.done = failure.value, False, True
        self.wake()

    def wake(self):
        lock = self.lock
        if lock is None:  # not sleeping: it sees ``done`` before it would sleep
            return
        try:
            lock.release()
        except RuntimeError:  # already awake
            pass

    def settled(self):
        self.done = True
        self.wake()


cdef class SessionCore:
    """The state and the receiving hot path of a session (its base)."""

    # as in sessioncore.py, as C fields
    cdef public object sock
    cdef public object broker
    cdef public object name
    cdef public bint closed
    cdef public object ready
    cdef public object _raw_sock
    cdef public bint _reads_into
    cdef public object _lock
    cdef public dict _pending
    cdef public list _queue
    cdef public bint _lost_done
    cdef public object _send_mutex

    def feed(self, data):
        """Process received bytes (None: the message :meth:`_read_rest`
        completed): resolve answers, dispatch calls."""
        self._feed_c(data)

    cdef int _feed_c(self, data) except -1:
        # feed's body: the compiled core calls it directly (no virtual lookup)
        cdef list answers = []
        cdef bint ready = False
        cdef BrokerCore broker
        violation = None
        lock = self._lock  # (take/give: C calls, cheaper than "with")
        take(lock)
        try:
            broker = self.broker
            events = broker.receive_c(data) if data is not None else broker.receive_buffered()
            if broker._out or broker.released:  # (has_output)
                self._queue.extend(broker.pieces_c())
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
        finally:
            give(lock)
        if self._queue:
            self._flush()
        if ready and not self.ready.called:
            self.ready.callback(True)  # (a failed first write may have ended it)
        for d, value, ok in answers:
            if type(d) is _Follower:  # a blocking call's (a C call)
                if ok:
                    (<_Follower>d).callback(value)
                else:
                    (<_Follower>d).errback(Failure(value))
            elif ok:
                d.callback(value)
            else:
                d.errback(Failure(value))
        if violation is not None:
            log.warning("closing PB connection %s: %s", self.name, violation.error)
            self._lost(f"protocol violation: {violation.error}", violation.error)
        return 0


cdef class ThreadedCore(SessionCore):
    """A blocking call on a threaded session, from start to end (its base)."""

    cdef public object _state
    cdef public object _leader
    cdef public object _leader_thread
    cdef public list _followers
    cdef public double _released_at
    cdef public Py_ssize_t _green_waiting
    cdef public object _idle
    cdef public object _wake_r
    cdef public tuple _wake_fds
    # The read buffer of the thread that last led (transport.read_buffer's),
    # kept so that a leader need not look it up each time: the buffer, its
    # address and size, and the thread's ident. The reference keeps it alive
    # should the thread end first.
    cdef object _area
    cdef unsigned long _area_thread  # (0: none yet)
    cdef char* _area_address
    cdef Py_ssize_t _area_size

    def call_blocking(self, oid, name, args, kwargs, timeout=None):
        """Call and wait for the answer without a Deferred (the fast path).

        Raises:
            the remote exception, CallTimeout, ConnectionLost,
            DeadReferenceError, or the local error of an unsendable argument.
        """
        return self._call_blocking_c(oid, name, args, kwargs, timeout)

    cdef object _call_blocking_c(self, oid, name, args, kwargs, timeout):
        # call_blocking's body, which blocking methods call directly
        if "gevent._hub_local" in _modules and cooperative_hub() is not None:
            return self._call_blocking_green(oid, name, args, kwargs, timeout)
        cdef _Follower slot = _Follower.__new__(_Follower)
        cdef bint direct
        cdef BrokerCore broker
        send_mutex = self._send_mutex
        lock = self._lock  # (take/give: C calls, cheaper than "with")
        take(lock)
        try:
            if self.closed:
                raise DeadReferenceError(STALE_REFERENCE)
            broker = self.broker
            request_id = broker.call_c(oid, name, args, kwargs, True, None, False)
            self._pending[request_id] = slot
            pieces = broker.pieces_c()
            # Nothing queued ahead and nobody writing (the usual case): write
            # the call from here. Taking the send lock before letting go of
            # the broker lock keeps messages in the order they were encoded.
            direct = not self._queue and attempt(send_mutex)
            if not direct:
                self._queue.extend(pieces)
        finally:
            give(lock)
        if direct:
            try:
                if len(pieces) == 1 and self._raw_sock is None:  # _write() written out
                    data, sock = pieces[0], self.sock
                    if (type(data) is bytes and sendalls_plain(sock)
                            and timeout_of(sock) is None):
                        _send_all(sock, data)
                    else:
                        sock.sendall(data)
                else:
                    self._write(pieces)
            except OSError as exc:
                self._lost(f"write failed: {exc}", exc)
            finally:
                give(send_mutex)
            if self._queue:  # queued by a finalizer while we wrote
                self._flush()
        else:
            self._flush()
        if _dispatch_working:  # (before_blocking(), its usual case written out)
            before_blocking()
        deadline = None if timeout is None else _monotonic() + timeout
        state = self._state
        take(state)
        if self._leader is None:  # nobody reads: lead at once (the usual case)
            self._leader, self._leader_thread = slot, PyThread_get_thread_ident()
            give(state)
            try:
                self._lead_c(slot, deadline, False)
            finally:
                self._resign_c()
        else:
            give(state)
        if not slot.done:
            self._wait(slot, deadline)
        elif slot.ok:  # the usual case, written out
            return slot.value
        return self._outcome(slot, request_id, name, timeout)

    def _read_rest(self, sock, flags):
        """Read into the broker's buffer while it says so (``assemble``):
        True once a message is complete, or may be (a short read: see
        :attr:`~syncpb.assembly.Assembly.guess`), then ``feed(None)``;
        False when the socket has nothing more now (``flags``
        MSG_DONTWAIT; with 0, it waits); None when the connection has
        ended (it is torn down)."""
        assembly = self.broker.message_buffer()
        size = transport.READ_SIZE
        cdef bint direct = reads_plain(sock) and timeout_of(sock) is None
        recv_into = None if direct else sock.recv_into
        try:
            while True:  # (once, unless all read is framed and the next read waits)
                if direct:  # assembly.fill with its loop in C, reading the descriptor
                    done = fill_direct(assembly, sock, size, flags, _DONTWAIT, True)
                else:
                    done = assembly.fill(recv_into, size, flags, _DONTWAIT)
                if done is not None or flags:
                    break
        except OSError as exc:
            self._lost(f"read failed: {exc}", exc)
            return None
        if done is None:
            return False
        if not done:
            self._lost("closed by peer", None)
            return None
        return True

    def _resign(self):
        self._resign_c()

    cdef int _resign_c(self) except -1:
        # _resign's body: the compiled core calls it directly (no virtual lookup)
        state = self._state  # (take/give: C calls, cheaper than "with")
        take(state)
        try:
            self._leader = self._leader_thread = None
            self._released_at = _now()
            if self._followers:
                self._wake_next_locked()
            elif self._green_waiting:
                try:
                    self._idle.release()  # greenlets wait: the background thread reads now
                except RuntimeError:
                    pass
        finally:
            give(state)
        return 0

    def _lead(self, _Follower me, deadline, bint interruptible=False):
        self._lead_c(me, deadline, interruptible)

    cdef int _lead_c(self, _Follower me, deadline, bint interruptible) except -1:
        """Read until ``me`` is done. A blocking call's answer comes over the
        socket, so it just reads (in recv); a call with a ``deadline`` or an
        ``interruptible`` waiter (a Deferred settled by anything, which
        also wakes on the pipe: see :meth:`_poke`) polls first."""
        sock, broker, reads_into = self.sock, self.broker, self._reads_into
        cdef bint polls = deadline is not None or interruptible
        fill_flags = _DONTWAIT if polls else 0  # (without polling, a read waits)
        cdef bint direct = (reads_into and reads_plain(sock)
                            and timeout_of(sock) is None)
        cdef char* buf = NULL
        cdef unsigned long ident
        cdef Py_ssize_t size = 0
        view = area = None
        if direct:
            ident = PyThread_get_thread_ident()
            if self._area is None or self._area_thread != ident:
                view, area = read_buffer()
                self._area, self._area_thread = area, ident
                self._area_address, self._area_size = _address(area), len(area)
            buf, size = self._area_address, self._area_size
        else:
            view, area = read_buffer()
        while not me.done and not self._lost_done:
            if polls:
                remaining = None if deadline is None else deadline - _monotonic()
                if remaining is not None and remaining <= 0:
                    return 0
                wake = self._wake_r if interruptible and self._wake_fds else None
                try:
                    fd = sock.fileno()
                    ready = poll_readable([fd] if wake is None else [fd, wake], remaining)
                except (OSError, ValueError):  # closed under us: the loop sees it
                    return 0
                if wake is not None and wake in ready:
                    try:
                        os.read(wake, 64)
                    except OSError:
                        return 0
                    continue
                if not ready:
                    return 0
            if broker.assemble and reads_into:  # messages come in pieces here
                done = self._read_rest(sock, fill_flags)
                if done is None:
                    return 0
                if not done:
                    continue  # (the loop waits for more)
                data = None  # the message is in the broker's buffer
            elif direct:  # the hot loop of a blocking call: read straight from the descriptor
                try:
                    data = _recv_now(sock, buf, size, True)
                except OSError as exc:
                    self._lost(f"read failed: {exc}", exc)
                    return 0
                if data is None:
                    continue
                if not data:
                    self._lost("closed by peer", None)
                    return 0
            elif reads_into:  # the hot loop of a blocking call: _recv() written out
                try:
                    data = view[:sock.recv_into(area)].tobytes()
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._lost(f"read failed: {exc}", exc)
                    return 0
                if not data:
                    self._lost("closed by peer", None)
                    return 0
            else:
                data = self._recv(sock)
                if data is None:
                    return 0
                if not data:
                    continue
            try:
                self._feed_c(data)
            except Exception as exc:
                self._internal_error(exc)
                return 0
        return 0


# The types whose call_blocking is ThreadedCore's (a blocking method calls
# its body as C) or not (it calls the method), by type, learnt once each.
cdef dict _direct_types = {}


cdef object _call_blocking(session, oid, name, args, kwargs, timeout):
    """``session.call_blocking(...)``: a C call when that is ThreadedCore's."""
    kind = type(session)
    direct = _direct_types.get(kind)
    if direct is None:
        owner = next((base for base in kind.__mro__ if "call_blocking" in base.__dict__), None)
        direct = _direct_types[kind] = owner is ThreadedCore
    if direct:
        return (<ThreadedCore>session)._call_blocking_c(oid, name, args, kwargs, timeout)
    return session.call_blocking(oid, name, args, kwargs, timeout)


cdef class GreenCore(SessionCore):
    """The read loop of a gevent session, and the calls it runs inline
    (the base of :class:`~syncpb.green.GreenSession`)."""

    # as in sessioncore.py, as C fields
    cdef public object _reader
    cdef public list _calls
    cdef public bint _batching
    cdef public bint _draining
    cdef public Py_ssize_t _yield_misses
    cdef public Py_ssize_t _check_unsent_at
    cdef public bint track_messages
    cdef public object offload
    cdef public object _watch
    cdef public object _gevent
    cdef public object _getcurrent

    cdef bint _yield_now(self):
        """The socket was empty: give up the CPU to a peer that may share
        it, unless the misses so far say it is elsewhere (see
        :meth:`_look_again`). True when it did: read once more, and count
        a read that found nothing in :attr:`_yield_misses` (0 on a hit)."""
        if _sched_yield is None:
            return False
        cdef Py_ssize_t misses = self._yield_misses
        if misses >= YIELD_MISSES and (misses - YIELD_MISSES) % YIELD_PROBE != YIELD_PROBE - 1:
            self._yield_misses = misses + 1  # (empty reads since the last hit)
            return False
        _sched_yield()
        return True

    def _look_again(self, recv_into, view, area):
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

    cdef bint _send_direct(self) except -1:
        """The usual answers, one piece, written straight to gevent's raw
        socket when it is a plain one (:meth:`_write_queue_nowait` for
        that case): True when that was all (the queue is empty then, or
        the connection is lost); False when the queue is left for
        :meth:`_write_queue_nowait` (not that case, or the socket did not
        take it all now)."""
        cdef list queue = self._queue
        cdef Py_ssize_t count, size
        cdef int code
        raw = self._raw_sock
        if len(queue) != 1 or raw is None:
            return False
        data = queue[0]
        if (type(data) is not bytes or not sends_plain(raw)
                or timeout_of(raw) != 0.0):
            return False
        size = PyBytes_GET_SIZE(data)
        count = c_send(fd_of(raw), PyBytes_AS_STRING(data), size, 0)
        if count == size:
            del queue[0]
            return True
        if count > 0:
            queue[0] = memoryview(data)[count:]
            return False
        code = errno
        if count < 0 and code != EAGAIN and code != EWOULDBLOCK and code != EINTR:
            exc = _os_error(code)
            queue.clear()
            self._lost(f"write failed: {exc}", exc)
            return True
        return False

    def _read_now(self, recv_into, view, area):
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

    cdef object _read_direct(self, raw, char* buf, Py_ssize_t size):
        """:meth:`_read_now` for a plain socket read from its descriptor."""
        try:
            data = _recv_now(raw, buf, size, False)
            return data if data is not None else self._look_again_direct(raw, buf, size)
        except OSError:
            return b""

    cdef object _look_again_direct(self, raw, char* buf, Py_ssize_t size):
        """:meth:`_look_again` for a plain socket read from its descriptor
        (raises OSError as the read does)."""
        if not self._yield_now():
            return None
        data = _recv_now(raw, buf, size, False)
        if data is None:
            self._yield_misses += 1
        else:
            self._yield_misses = 0
        return data

    cdef bint _read_rest_green(self, raw, sock) except -1:
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
        cdef bint direct = reads_plain(raw) and timeout_of(raw) == 0.0
        recv_into = None if direct else raw.recv_into
        cdef bint yielded = False
        while True:
            try:
                if direct:  # assembly.fill with its loop in C, reading the descriptor
                    done = fill_direct(assembly, raw, size, 0, 0, False)
                else:
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

    def run(self):
        """Read and run calls until the connection ends, or until a call
        run here waits and another greenlet takes over (never raises)."""
        me = self._getcurrent()
        self._reader = me
        self._flush()
        sock, watched = self.sock, self._watch.watched
        raw, broker = self._raw_sock, self.broker
        recv_into = raw.recv_into if raw is not None else None
        view, area = read_buffer()  # this hub's thread's
        cdef bint direct = (raw is not None and reads_plain(raw)
                            and timeout_of(raw) == 0.0)
        cdef char* buf = _address(area) if direct else NULL
        cdef Py_ssize_t size = len(area)
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
                if direct:
                    data = self._read_direct(raw, buf, size)
                else:
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
                    self._feed_c(data)
                    if self.track_messages:
                        self._note_message()
                if self._calls:
                    self._run_calls(me)
            except Exception as exc:  # never let an error escape into the hub
                self._internal_error(exc)
            finally:
                watched.pop(me, None)

    def _run_calls(self, me):
        """Run the queued calls in order; answers go out in one write after
        the batch (:meth:`Session.run_call` written out for the usual call
        that returns a plain value at once)."""
        cdef BrokerCore broker = self.broker
        calls, lock, queue = self._calls, self._lock, self._queue
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
                    take(lock)  # (a C call, cheaper than "with")
                    try:
                        if self._lost_done:
                            return
                        broker.answer_c(call.request_id, result, call.perspective)
                        queue.extend(broker.pieces_c())
                    finally:
                        give(lock)
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
            elif not self._send_direct():
                self._write_queue_nowait()
            if queue and not self._lost_done:
                if len(queue) >= self._check_unsent_at:
                    self._check_unsent()
                    if self._lost_done:
                        return
                self._draining = True
                self._gevent.spawn_raw(self._drain)
