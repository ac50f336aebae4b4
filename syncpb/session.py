"""Where the broker meets a transport (layer L4).

Theory of operation
-------------------
A :class:`Session` owns one socket and one :class:`~syncpb.broker.Broker`.
It is the only code that feeds the broker received bytes and writes what
the broker produces:

* **Broker state** is guarded by one real lock held only for pure
  computation (never across I/O, never while user code runs), so any
  thread or greenlet may call, answer or release.
* **Writing.** Bytes the broker produces are moved, under that lock, onto a
  FIFO queue; whoever holds the send lock drains it. The order in which
  messages were encoded is the order they go out (a ``decref`` can never
  overtake the message that still names the object).
* **Reading** is the subclass's policy: :class:`GreenSession` has a reader
  greenlet; :class:`~syncpb.threaded.ThreadedSession` lets waiting callers
  take turns reading. Both hand received bytes to :meth:`Session.feed`.
* **Incoming calls** go to :meth:`Session._dispatch` (a greenlet per call,
  or the ordered thread dispatcher) and run :meth:`Session.run_call`; a
  method may return a Deferred, answered when it fires (from any thread).
* **Loss.** However the connection ends (peer closed, OS error, protocol
  violation, :meth:`close`), :meth:`_lost` runs once: waiting calls fail
  with :class:`~syncpb.errors.ConnectionLost`, disconnect callbacks run,
  the socket closes.
"""

from __future__ import annotations

import collections
import logging
import socket as stdlib_socket
import sys
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .broker import (AnswerReceived, Broker, CallReceived, ErrorReceived, ImportRecord,
                     ProtocolViolation, Ready)
from .deferred import Deferred
from .errors import BananaError, ConnectionLost, DeadReferenceError, Error, ProtocolError
from .failure import Failure
from .reference import RemoteReference

__all__ = ["Session", "GreenSession", "real", "gevent_active"]

log = logging.getLogger("syncpb")
RECV_SIZE = 256 * 1024


def real(module: str, name: str) -> Any:
    """Return ``module.name`` as it was before any gevent monkey-patching."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        return monkey.get_original(module, name)
    return getattr(__import__(module), name)


_allocate_lock = real("_thread", "allocate_lock")
_get_ident = real("_thread", "get_ident")


def gevent_active() -> bool:
    """True when the calling thread runs gevent (a hub, or patched sockets)."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey
    from gevent._hub_local import get_hub_if_exists
    return bool(monkey.is_module_patched("socket")) or get_hub_if_exists() is not None


class Session:
    """One connection: a broker, a socket, the calls in flight.

    Args:
        sock: a connected stream socket.
        broker: the connection's protocol state.
        name: a label for logs (the peer's address).
    """

    #: The :class:`~syncpb.deferred.Waiter` set on call Deferreds (None: default).
    waiter: Any = None

    def __init__(self, sock: Any, broker: Broker, name: str = "") -> None:
        self.sock = sock
        self.broker = broker
        self.name = name
        self.closed = False
        self.ready = Deferred()
        self.ready._waiter = self.waiter
        self._lock = _allocate_lock()
        self._pending: Dict[int, Deferred] = {}
        self._queue: Deque[bytes] = collections.deque()
        self._lost_done = False
        self._disconnect_callbacks: List[Callable[[], Any]] = []
        broker.proxy_factory = self._make_proxy
        self._enqueue_locked()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}{' closed' if self.closed else ''}>"

    # ------------------------------------------------------------ policy hooks

    def _dispatch(self, call: CallReceived) -> None:
        """Run an incoming call somewhere that may block."""
        raise NotImplementedError

    def _send_lock(self) -> Any:
        """The lock serialising writes to the socket."""
        raise NotImplementedError

    def _kick(self) -> None:
        """Ask for queued broker output (decrefs) to be written soon."""
        self._try_flush()

    # ------------------------------------------------------------ proxies

    def _make_proxy(self, broker: Broker, record: ImportRecord) -> RemoteReference:
        return RemoteReference(self, record)

    def root_reference(self) -> RemoteReference:
        """A proxy for the peer's ``b'root'`` object (never released)."""
        return RemoteReference(self, ImportRecord(b"root"), counted=False)  # type: ignore[arg-type]

    def release(self, record: ImportRecord) -> None:
        """A proxy died: queue its decrefs (safe from ``__del__``, any thread)."""
        if not self._lost_done:
            self.broker.released.append(record)
            self._kick()

    # ------------------------------------------------------------ outgoing

    def call_remote(self, oid: Any, name: str, args: tuple, kwargs: Dict[str, Any],
                    answer_required: bool = True) -> Deferred:
        """Send a call; return the Deferred of its answer.

        An argument that cannot be sent fails the Deferred at once.

        Raises:
            DeadReferenceError: the connection is closed.
        """
        d = Deferred()
        d._waiter = self.waiter
        with self._lock:
            if self.closed:
                raise DeadReferenceError("Calling Stale Broker")
            try:
                request_id = self.broker.call(oid, name, args, kwargs, answer_required)
            except (BananaError, TypeError, Error, ProtocolError) as exc:
                error: Optional[BaseException] = exc
            else:
                error = None
                if answer_required:
                    self._pending[request_id] = d
                self._enqueue_locked()
        if error is not None:
            d.errback(error)
            return d
        self._flush()
        if not answer_required:
            d.callback(None)
        return d

    def _enqueue_locked(self) -> None:
        data = self.broker.data_to_send()
        if data:
            self._queue.append(data)

    def _flush(self) -> None:
        """Write everything queued, in order."""
        with self._send_lock():
            self._write_queue()

    def _try_flush(self) -> None:
        """Flush only if no lock is busy (used from finalizers)."""
        if self._lock.acquire(False):
            try:
                self._enqueue_locked()
            finally:
                self._lock.release()
        lock = self._send_lock()
        if lock.acquire(False):
            try:
                self._write_queue()
            finally:
                lock.release()

    def _write_queue(self) -> None:
        queue, sock = self._queue, self.sock
        while queue:
            data = queue.popleft()
            try:
                sock.sendall(data)
            except OSError as exc:
                queue.clear()
                self._lost(f"write failed: {exc}", exc)
                return

    # ------------------------------------------------------------ incoming

    def feed(self, data: bytes) -> None:
        """Process received bytes: resolve answers, dispatch calls."""
        with self._lock:
            events = self.broker.receive_data(data)
            self._enqueue_locked()
            answers: List[Tuple[Deferred, Any, bool]] = []
            calls: List[CallReceived] = []
            violation: Optional[ProtocolViolation] = None
            for event in events:
                kind = type(event)
                if kind is AnswerReceived or kind is ErrorReceived:
                    d = self._pending.pop(event.request_id, None)
                    if d is not None:
                        answers.append((d, event.value if kind is AnswerReceived else event.error,
                                        kind is AnswerReceived))
                elif kind is CallReceived:
                    calls.append(event)
                elif kind is ProtocolViolation:
                    violation = event
        if self._queue:
            self._flush()
        if events and type(events[0]) is Ready:
            self.ready.callback(True)
        for d, value, ok in answers:
            if ok:
                d.callback(value)
            else:
                d.errback(Failure(value))
        for call in calls:
            self._dispatch(call)
        if violation is not None:
            log.warning("closing PB connection %s: %s", self.name, violation.error)
            self._lost(f"protocol violation: {violation.error}", violation.error)

    def run_call(self, call: CallReceived) -> None:
        """Run an incoming call and send its answer (the dispatchers' job)."""
        try:
            result = call.method(*call.args, **call.kwargs)
        except BaseException as exc:
            self._log_failure(call, exc)
            self._reply(call, exc, False)
            return
        if isinstance(result, Deferred):
            result.addCallbacks(lambda value: self._reply(call, value, True),
                                lambda failure: self._reply(call, failure.value, False))
            return
        self._reply(call, result, True)

    def _log_failure(self, call: CallReceived, exc: BaseException) -> None:
        if not isinstance(exc, Error):  # an Error is an expected failure, as in Twisted
            log.warning("remote method %s raised; the peer receives the failure",
                        getattr(call.method, "__qualname__", "?"), exc_info=exc)

    def _reply(self, call: CallReceived, value: Any, ok: bool) -> None:
        if not call.answer_required:
            return
        with self._lock:
            if self._lost_done:
                return
            if ok:
                self.broker.answer(call.request_id, value)
            else:
                self.broker.fail(call.request_id, value)
            self._enqueue_locked()
        self._flush()

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
            self.broker.connection_lost()
            pending, self._pending = self._pending, {}
        try:
            self.sock.shutdown(stdlib_socket.SHUT_RDWR)
        except OSError:
            pass
        self._closed_socket()
        for d in pending.values():
            error = ConnectionLost(f"connection to {self.name} lost: {reason}")
            error.__cause__ = cause
            d.errback(Failure(error))
        if not self.ready.called:
            self.ready.errback(Failure(ConnectionLost(f"connection to {self.name} lost: {reason}")))
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


class GreenSession(Session):
    """A session driven by gevent: a reader greenlet, a greenlet per call.

    Must be created in the thread that runs its hub. Calls, answers and
    releases may come from other threads; their writes are handed to the
    hub thread.
    """

    def __init__(self, sock: Any, broker: Broker, name: str = "") -> None:
        import gevent
        import gevent.lock
        self._gevent = gevent
        self._hub = gevent.get_hub()
        self._hub_thread = _get_ident()
        self._green_lock = gevent.lock.Semaphore()
        self._reader: Any = None
        super().__init__(sock, broker, name)

    def _send_lock(self) -> Any:
        return self._green_lock

    def _flush(self) -> None:
        if _get_ident() != self._hub_thread:
            self._hub.loop.run_callback_threadsafe(self._flush)
            return
        super()._flush()

    def _kick(self) -> None:
        self._hub.loop.run_callback_threadsafe(self._flush_released)

    def _flush_released(self) -> None:
        with self._lock:
            self._enqueue_locked()
        if self._queue and not self.closed:
            self._flush()

    def _dispatch(self, call: CallReceived) -> None:
        self._gevent.spawn_raw(self.run_call, call)

    def start(self) -> None:
        """Start the reader greenlet."""
        self._flush()
        self._reader = self._gevent.spawn(self.run)

    def run(self) -> None:
        """Read until the connection ends (blocks the calling greenlet)."""
        self._flush()
        sock = self.sock
        while not self._lost_done:
            try:
                data = sock.recv(RECV_SIZE)
            except OSError as exc:
                self._lost(f"read failed: {exc}", exc)
                return
            if not data:
                self._lost("closed by peer", None)
                return
            try:
                self.feed(data)
            except Exception as exc:  # never let an error escape into the hub
                log.exception("internal error on PB connection %s", self.name)
                self._lost(f"internal error: {exc}", exc)
                return
