"""Where the broker meets a transport (layer L4).

Theory of operation
-------------------
A :class:`Session` owns one socket and one :class:`~syncpb.broker.Broker`.
It is the only code that feeds the broker received bytes and writes what
the broker produces:

* **Broker state** is guarded by one real lock held only for pure
  computation (never across I/O, never while user code runs), so any
  thread or greenlet may call, answer or release.
* **Writing.** Bytes the broker produces go out through one FIFO queue, in
  the order they were encoded (:mod:`syncpb.sendqueue`).
* **Reading** is the subclass's policy: :class:`~syncpb.green.GreenSession`
  (the server's) has a reader greenlet; :class:`~syncpb.threaded.ThreadedSession`
  (every client connection) lets waiting threads take turns reading, while
  greenlets only wait. Both hand received bytes to :meth:`Session.feed`;
  while messages arrive in pieces (the broker's ``assemble``), they read
  straight into the broker's buffer instead, a message's pieces with no
  bytes object, event or lock each, and feed it once (``feed(None)``).
* **Incoming calls** go to :meth:`Session._dispatch` (a greenlet per call,
  or the ordered thread dispatcher) and run :meth:`Session.run_call`
  (:mod:`syncpb.incoming`).
* **Loss.** However the connection ends (peer closed, OS error, protocol
  violation, :meth:`close`), :meth:`_lost` runs once: waiting calls fail
  with :class:`~syncpb.errors.ConnectionLost`, disconnect callbacks run,
  the socket closes.
"""

from __future__ import annotations

import functools
import logging
import socket as stdlib_socket
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from .broker import Broker, CallReceived, ImportRecord
from .deferred import Deferred
from .errors import (STALE_REFERENCE, BananaError, CallTimeout, ConnectionLost,
                     DeadReferenceError, Error, ProtocolError)
from .failure import Failure
from .incoming import BLOCKING_ATTRIBUTE, MARKS, IncomingCalls, is_blocking
from .reference import RemoteCacheObserver, RemoteReference
from .reference import _blocking_method as _reference_blocking_method
from .osthreads import OSThread
from .sendqueue import SendQueue, _Piece
from .sendqueue import _DONTWAIT as _DONTWAIT  # (threaded.py imports it from here)
from .transport import read_buffer
from .waiting import real
from . import sessioncore, speedups

if TYPE_CHECKING:
    _blocking_method = _reference_blocking_method
    from .sessioncore import SessionCore as SessionCore
    from .sessioncore import ThreadedCore as ThreadedCore
    from .sessioncore import GreenCore as GreenCore
    from .sessioncore import _Follower as _Follower
    _allocate_lock: Callable[[], Any] = real("_thread", "allocate_lock")
else:
    # The sessions' state and hot paths: compiled (syncpb/_csessioncore.pyx)
    # when built, else the reference, syncpb/sessioncore.py.
    _core = speedups.load("_csessioncore") or sessioncore
    SessionCore, ThreadedCore, GreenCore = _core.SessionCore, _core.ThreadedCore, _core.GreenCore
    _Follower = _core._Follower
    # The blocking proxy methods sessions hand to RemoteReference: the
    # compiled twin when built, else reference.py's own.
    _blocking_method = getattr(_core, "blocking_method", None) or _reference_blocking_method
    # The sessions' locks: with the compiled core, syncpb._csockio's (the same
    # OS lock, taken and let go by C calls from that core); else the standard one.
    _sockio = None if _core is sessioncore else speedups.load("_csockio")
    _allocate_lock = real("_thread", "allocate_lock") if _sockio is None else _sockio.allocate_lock

__all__ = ["Session", "real", "BLOCKING_ATTRIBUTE", "MARKS", "is_blocking"]

log = logging.getLogger("syncpb")
# The size hint for streams that wrap another (TLS): they read into the
# shared buffer of syncpb.transport.read_buffer() themselves.
RECV_SIZE = 64 * 1024


_get_ident = real("_thread", "get_ident")


class Session(SessionCore, IncomingCalls, SendQueue):
    """One connection: a broker, a socket, the calls in flight (its state and
    :meth:`feed`: :class:`~syncpb.sessioncore.SessionCore`; running the
    peer's calls: :class:`~syncpb.incoming.IncomingCalls`; writing:
    :class:`~syncpb.sendqueue.SendQueue`).

    Args:
        sock: a connected stream socket.
        broker: the connection's protocol state.
        name: a label for logs (the peer's address).
    """

    #: The :class:`~syncpb.deferred.Waiter` set on call Deferreds (None: default).
    waiter: Any = None
    #: Default timeout (seconds) of blocking proxy calls; None waits for ever.
    call_timeout: Optional[float] = None
    #: Where incoming calls that must not run in the hub go: an object with
    #: ``everything`` (bool) and ``submit(method, args, kwargs) -> Deferred``
    #: (the server's thread pool); None runs every call where it arrives.
    offload: Any = None
    #: Held while writing (the subclass sets it: a lock, or gevent's Semaphore).
    _send_mutex: Any
    #: Makes the blocking proxy method for a remote method's name (see
    #: :meth:`RemoteReference.__getattr__ <syncpb.reference.RemoteReference>`).
    blocking_method = staticmethod(_blocking_method)

    def __init__(self, sock: Any, broker: Broker, name: str = "") -> None:
        self.sock = sock
        self.broker = broker
        self.name = name
        self.closed = False
        self.ready = Deferred()
        self.ready._waiter = self.waiter
        if not broker.is_client:  # nobody waits for a server's handshake: note its failure
            self.ready.addErrback(self._closed_before_handshake)
        #: gevent's non-blocking socket under a cooperative one, for direct sends
        self._raw_sock: Any = getattr(sock, "_sock", None)
        self._reads_into = hasattr(sock, "recv_into")
        self._lock = _allocate_lock()
        self._pending: Dict[int, Any] = {}  # Deferreds, or anything with callback/errback
        #: bytes waiting to be written, in order (a list: cheaper than a deque
        #: for the few pieces of a message, and it costs an idle connection little)
        self._queue: List[_Piece] = []
        self._lost_done = False
        self._disconnect_callbacks: List[Callable[[], Any]] = []
        broker.proxy_factory = self._make_proxy
        broker.observer_factory = self._make_observer
        broker.on_release = self.release
        broker.peer = name
        broker.on_abort = self.close
        self._enqueue_locked()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}{' closed' if self.closed else ''}>"

    # ------------------------------------------------------------ policy hooks

    def _dispatch(self, call: CallReceived) -> None:
        """Hand an incoming call to the policy that runs it (called under the lock,
        so it must only queue the call, never run it)."""
        raise NotImplementedError


    def _kick(self) -> None:
        """Ask for queued broker output (decrefs) to be written soon."""
        self._try_flush()

    # ------------------------------------------------------------ proxies

    def _make_proxy(self, broker: Broker, record: ImportRecord) -> RemoteReference:
        return RemoteReference(self, record)

    def _make_observer(self, broker: Broker, cacheable: Any, perspective: Any) -> Any:
        return RemoteCacheObserver(self, cacheable, perspective)

    def root_reference(self) -> RemoteReference:
        """A proxy for the peer's ``b'root'`` object (never released)."""
        return RemoteReference(self, ImportRecord(b"root"), counted=False)  # type: ignore[arg-type]

    def release(self, record: Any) -> None:
        """A proxy or a cache copy died: queue its decrefs / decache (safe from
        ``__del__`` and weak-reference callbacks, in any thread)."""
        if not self._lost_done:
            self.broker.released.append(record)
            self._kick()

    # ------------------------------------------------------------ outgoing

    def call_remote(self, oid: Any, name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                    answer_required: bool = True, *, perspective: Any = None,
                    cacheable: Any = None) -> Deferred:
        """Send a call; return the Deferred of its answer.

        With ``cacheable`` (a Cacheable the peer holds; ``oid`` is then
        unused) the call is an update of the peer's copy. ``perspective``
        is the one copies in the arguments are made for. An argument that
        cannot be sent fails the Deferred at once. Cancelling the Deferred
        (``cancel()``, ``addTimeout``) forgets the call: its answer, should
        it still come, is discarded (:meth:`_forget_call`).

        Raises:
            DeadReferenceError: the connection is closed, or the peer no
                longer holds ``cache``.
        """
        d = Deferred()
        d._waiter = self.waiter
        with self._lock:
            if self.closed:
                raise DeadReferenceError(STALE_REFERENCE)
            try:
                if cacheable is not None:
                    oid = self.broker.cache_id_of(cacheable)
                    if oid is None:
                        raise DeadReferenceError("the peer no longer holds this cached object")
                request_id = self.broker.call(oid, name, args, kwargs, answer_required,
                                              perspective, cacheable is not None)
            except (BananaError, TypeError, Error, ProtocolError) as exc:
                error: Optional[BaseException] = exc
            else:
                error = None
                if answer_required:
                    self._pending[request_id] = self._pending_entry(d)
                    d._canceller = functools.partial(self._forget_call, request_id)
                self._enqueue_locked()
        if error is not None:
            d.errback(error)
            return d
        self._sent_call()
        if not answer_required:
            d.callback(None)
        return d

    def _pending_entry(self, d: Deferred) -> Any:
        """What waits in the pending table for the answer that fires ``d``
        (anything with ``callback``/``errback``; a policy hook)."""
        return d

    def _forget_call(self, request_id: int, d: Deferred) -> None:
        """The canceller of a call's Deferred: drop its pending entry, so the
        answer is discarded when it comes. If the entry is already gone, the
        answer (or ConnectionLost) is being delivered right now: ``d``
        ignores that one firing, having failed with CancelledError."""
        with self._lock:
            entry = self._pending.pop(request_id, None)
        if entry is None:
            d._ignore_next_fire()

    def flush(self) -> None:
        """Write everything queued now (blocks while the socket is full)."""
        self._flush()

    def spawn(self, task: Callable[[], Any], name: str) -> None:
        """Run ``task`` in the background (a thread here; a greenlet for gevent)."""
        OSThread(task, name).start()

    def call_blocking(self, oid: Any, name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any],
                      timeout: Optional[float] = None) -> Any:
        """Call and wait for the answer; raise the remote exception. A call
        that times out is forgotten: its answer is discarded if it comes."""
        d = self.call_remote(oid, name, args, kwargs)
        try:
            return d.result(timeout=timeout)
        except CallTimeout:
            d.addErrback(lambda failure: None)  # the caller has its error already
            d.cancel()
            raise

    def _sent_call(self) -> None:
        """A call was queued by :meth:`call_remote`; write it (policy hook)."""
        self._flush()

    # ------------------------------------------------------------ incoming

    def _recv(self, sock: Any) -> Optional[bytes]:
        """Read once; None when the connection has ended (it is then torn
        down); ``b""`` when what arrived carried no data for us yet (a
        stream that wraps another, such as TLS, says so with
        BlockingIOError)."""
        try:
            if self._reads_into:  # a socket: into the reused buffer, then copy out
                view, area = read_buffer()
                data = view[:sock.recv_into(area)].tobytes()
            else:  # a stream that wraps another (TLS) hands over its own bytes
                data = sock.recv(RECV_SIZE)
        except BlockingIOError:
            return b""
        except OSError as exc:
            self._lost(f"read failed: {exc}", exc)
            return None
        if not data:
            self._lost("closed by peer", None)
            return None
        return data

    def _closed_before_handshake(self, failure: Failure) -> None:
        """A peer left before the PB handshake (a port probe, a health check,
        a client that gave up): worth a line, not an error."""
        log.info("PB connection %s ended before the handshake: %s", self.name,
                 failure.getErrorMessage())

    def _internal_error(self, exc: Exception) -> None:
        """A bug of ours while handling this connection: log it, end only it."""
        log.exception("internal error on PB connection %s", self.name)
        self._lost(f"internal error: {exc}", exc)

    # ------------------------------------------------------------ ending

    def notify_on_disconnect(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` once when the connection ends."""
        if self._lost_done:
            callback()
            return
        self._disconnect_callbacks.append(callback)

    def dont_notify_on_disconnect(self, callback: Callable[[], Any]) -> None:
        """Forget a callback given to :meth:`notify_on_disconnect`."""
        if callback in self._disconnect_callbacks:
            self._disconnect_callbacks.remove(callback)

    def close(self, reason: str = "connection closed locally") -> None:
        """Close the connection; waiting calls fail with ConnectionLost."""
        self._lost(reason, None)

    def _lost(self, reason: str, cause: Optional[BaseException]) -> None:
        with self._lock:
            if self._lost_done:
                return
            self._lost_done = self.closed = True
            still_to_tell = self.broker.take_disconnect_work()
            self.broker.connection_lost()
            pending, self._pending = self._pending, {}
        try:
            self.sock.shutdown(stdlib_socket.SHUT_RDWR)
        except OSError:
            pass
        # Fail the waiting calls before waking their threads, so each one
        # wakes to its ConnectionLost rather than to an unanswered call.
        for d in pending.values():
            error = ConnectionLost(f"connection to {self.name} lost: {reason}")
            error.__cause__ = cause
            d.errback(Failure(error))
        self._closed_socket()
        if not self.ready.called:
            error = ConnectionLost(f"connection to {self.name} lost: {reason}")
            error.__cause__ = cause
            self.ready.errback(Failure(error))
        for work in still_to_tell:  # stoppedObserving, logouts: each runs once
            work()
        callbacks, self._disconnect_callbacks = self._disconnect_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("error in a disconnect callback")

    def _closed_socket(self) -> None:
        """Release the socket (subclasses stop their readers first)."""
        try:
            self.sock.close()
        except OSError:
            pass
