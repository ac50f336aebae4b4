"""A client that keeps a connection: :class:`ReconnectingClient` (layer L5).

Theory of operation
-------------------
One real OS thread per client (:class:`~syncpb.osthreads.OSThread`, a
thread even under gevent monkey-patching) connects with
:func:`syncpb.connect`, logs in, runs ``on_connect`` and then publishes the
connection; when the connection ends (``notifyOnDisconnect``) it runs
``on_disconnect`` and connects again after a delay from :class:`Backoff`.

* **Nothing is re-sent.** A call in flight when the link drops fails with
  ConnectionLost (it may have run). A RemoteReference belongs to the
  connection it came from: once that has ended it raises
  DeadReferenceError and never reaches the next server. Only the client's
  own helpers (``call``, ``callRemote``, ``root``, ``remote``) resolve the
  current connection, at each use.
* **Waiting.** A caller waits for a connection on a
  :class:`~syncpb.waiting.Wakeup` made in its own context (in a running
  gevent hub only its greenlet waits), set by the client's thread when a
  connection is published or the client closes. One real lock guards the
  state, never held while waiting, connecting or running user code.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, List, Mapping, NamedTuple, Optional, Tuple, Union

if TYPE_CHECKING:
    import random  # (imported when a Backoff needs its own: it costs a process 0.2 MiB)

from .client import Connection, connect
from .deferred import Deferred, fail
from .errors import CallTimeout, ConnectionFailed, ConnectionLost, DeadReferenceError
from .osthreads import OSFlag, OSThread
from .reference import RemoteReference
from .transport import Address, AddressLike, parse_address
from .waiting import Wakeup, real

__all__ = ["ReconnectingClient", "Backoff", "NotConnected", "LoginSpec"]

log = logging.getLogger("syncpb")

_allocate_lock = real("_thread", "allocate_lock")
_get_ident = real("_thread", "get_ident")
_monotonic = time.monotonic

#: How to log in after each connection: None (use the root), ``(username,
#: password)``, a dict of :meth:`Connection.login` keyword arguments, or a
#: callable ``(connection) -> avatar`` for anything else.
LoginSpec = Union[None, Tuple[Union[str, bytes], Union[str, bytes]], Mapping[str, Any],
                  Callable[[Connection], RemoteReference]]


class NotConnected(ConnectionFailed):
    """A :class:`ReconnectingClient` had no connection for a call: it is
    reconnecting (and the caller does not wait, or waited out its timeout)
    or it was closed. The call was never sent, so trying again is safe
    (unlike :class:`~syncpb.errors.ConnectionLost`)."""


class Backoff:
    """Bounded exponential delays with proportional jitter.

    The ``step``-th delay (from 0) is drawn uniformly from
    ``[(1 - jitter) * base, base]`` where ``base = min(maximum, initial *
    factor ** step)``: never more than ``maximum``. ``jitter=0`` gives the
    bare schedule, ``jitter=1`` "full jitter" (from 0 to ``base``).

    Args:
        initial, maximum, factor: seconds (> 0), seconds (>= ``initial``), >= 1.
        jitter, rng: the random fraction of each delay (0 to 1) and its
            source (seed one for a reproducible schedule).

    Raises:
        ValueError: a parameter out of range.
    """

    def __init__(self, initial: float = 0.1, maximum: float = 30.0, factor: float = 2.0,
                 jitter: float = 0.5, rng: Optional[random.Random] = None) -> None:
        for ok, rule in ((initial > 0, "initial > 0"), (maximum >= initial, "maximum >= initial"),
                         (factor >= 1, "factor >= 1"), (0 <= jitter <= 1, "0 <= jitter <= 1")):
            if not ok:
                raise ValueError(f"backoff needs {rule}: initial={initial!r}, "
                                 f"maximum={maximum!r}, factor={factor!r}, jitter={jitter!r}")
        self.initial, self.maximum = float(initial), float(maximum)
        self.factor, self.jitter = float(factor), float(jitter)
        if rng is None:
            import random
            rng = random.Random()
        self.rng = rng
        self.step = 0

    def base(self, step: int) -> float:
        """The delay of ``step`` before jitter (capped; never overflows)."""
        if step <= 0:
            return self.initial
        try:
            return min(self.maximum, self.initial * self.factor ** step)
        except OverflowError:
            return self.maximum

    def delay(self, step: int) -> float:
        """The delay of ``step``, jitter drawn from :attr:`rng`."""
        return self.base(step) * (1.0 - self.jitter * self.rng.random())

    def next(self) -> float:
        """The next delay of the schedule (then the step after it)."""
        value = self.delay(self.step)
        self.step += 1
        return value

    def reset(self) -> None:
        """Start the schedule again (after a connection that worked)."""
        self.step = 0


class _Link(NamedTuple):
    """One connection the client made: logged in, with its end flag."""

    connection: Connection
    remote: RemoteReference
    ended: OSFlag


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _deadline(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else _monotonic() + timeout


class ReconnectingClient:
    """Keep a connection to a PB server, reconnecting when it drops.

    It starts connecting at once, in its own thread. After each connection
    it logs in, runs ``on_connect``, then hands the connection to callers;
    after each loss it runs ``on_disconnect`` and reconnects after a
    :class:`Backoff` delay (also after a loss: a server that accepts and
    drops cannot make it spin), the schedule starting again after each
    login. Failed attempts are logged with their reason (WARNING for the
    first of a run, INFO for the next).

    Args:
        address: what :func:`syncpb.connect` accepts (checked now).
        login: None (:attr:`remote` is the root), ``(username, password)``,
            a dict of :meth:`Connection.login` keyword arguments (``mind``,
            ``salted`` ...), or a callable ``(connection) -> avatar``
            (anonymous or any other login). It runs after each connection,
            in the client's thread; a failure closes that connection and
            counts as a failed attempt.
        on_connect: ``(connection, remote)`` after each connection and
            login, in the client's thread, before waiting callers are
            released (re-register callbacks here, with ``remote``; the
            client's own helpers called from it use this connection).
        on_disconnect: ``(reason)`` (a ConnectionLost) once after each
            connection that ``on_connect`` was called for has ended,
            including at :meth:`close`. Exceptions in either callback are
            logged, never propagated. Both run in the client's OS thread,
            outside any gevent hub.
        initial_delay, max_delay, factor, jitter: the :class:`Backoff`
            (proportional jitter: each delay is between ``1 - jitter`` and
            1 times the capped exponential).
        wait_when_disconnected: whether :meth:`call` waits (up to its
            timeout) for the next connection, or raises
            :class:`NotConnected` at once.
        connect_timeout: seconds for each connection attempt and for each
            login (None: no limit; :meth:`close` then waits for an attempt
            in progress).
        rng: the random source of the jitter (seeded, for tests).
        connect_kwargs: go to :func:`syncpb.connect` unchanged (``tls=``,
            ``call_timeout=``, ``limits=`` ...).

    Raises:
        ValueError: an unusable address or backoff parameter.
        TypeError: an unusable ``login``, a keyword :func:`syncpb.connect`
            does not take, or ``timeout=`` (use ``connect_timeout``).
    """

    def __init__(self, address: Union[AddressLike, Address], *, login: LoginSpec = None,
                 on_connect: Optional[Callable[[Connection, RemoteReference], Any]] = None,
                 on_disconnect: Optional[Callable[[ConnectionLost], Any]] = None,
                 initial_delay: float = 0.1, max_delay: float = 30.0, factor: float = 2.0,
                 jitter: float = 0.5, wait_when_disconnected: bool = True,
                 connect_timeout: Optional[float] = 10.0,
                 rng: Optional[random.Random] = None, **connect_kwargs: Any) -> None:
        if "timeout" in connect_kwargs:
            raise TypeError("ReconnectingClient takes connect_timeout=, not timeout=")
        if not (login is None or callable(login) or isinstance(login, Mapping)
                or (isinstance(login, tuple) and len(login) == 2)):
            raise TypeError("login must be None, (username, password), a dict of "
                            "Connection.login arguments, or a callable (connection) -> avatar")
        self.address = parse_address(address)
        inspect.signature(connect).bind(self.address, connect_timeout, **connect_kwargs)
        self.wait_when_disconnected = wait_when_disconnected
        self._login = login
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._backoff = Backoff(initial_delay, max_delay, factor, jitter, rng)
        self._connect_timeout = connect_timeout
        self._connect_kwargs = connect_kwargs
        self._call_timeout: Optional[float] = connect_kwargs.get("call_timeout")
        self._lock = _allocate_lock()
        self._closed = False
        self._open: Optional[Connection] = None    # being set up, or live
        self._setup: Optional[_Link] = None        # while on_connect runs
        self._current: Optional[_Link] = None      # handed to callers
        self._waiters: List[Wakeup] = []       # callers waiting for a connection
        self._exit_waiters: List[Wakeup] = []  # close() waiting for the thread
        self._exited = False
        self._last_error = "no attempt finished yet"
        self._stop = OSFlag()
        self._thread = OSThread(self._run, f"syncpb-reconnect-{self.address}")
        self._thread.start()

    # ------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def connection(self) -> Optional[Connection]:
        """The current connection, or None while disconnected."""
        link = self._usable()
        return None if link is None else link.connection

    @property
    def root(self) -> RemoteReference:
        """The current connection's root. Fetch it at each use: a kept one
        raises DeadReferenceError once its connection has ended.

        Raises:
            NotConnected: no connection now.
        """
        return self._wait_link(None, None, False).connection.root

    @property
    def remote(self) -> RemoteReference:
        """The current avatar when there is a ``login``, else the current
        root (what :meth:`call` calls). Fetch it at each use.

        Raises:
            NotConnected: no connection now.
        """
        return self._wait_link(None, None, False).remote

    def wait_connected(self, timeout: Optional[float] = None) -> Connection:
        """Wait (this greenlet or thread only) for a connection; return it
        (whatever ``wait_when_disconnected`` says). None waits until there
        is one or the client is closed.

        Raises:
            NotConnected: none within ``timeout`` (the message gives the
                last attempt's error), or the client was closed.
        """
        return self._wait_link(_deadline(timeout), timeout, True).connection

    def call(self, _name: str, *args: Any, timeout: Optional[float] = None,
             **kwargs: Any) -> Any:
        """Call ``_name`` on :attr:`remote` and return the answer.

        While disconnected it waits for the next connection when
        ``wait_when_disconnected`` is true. ``timeout`` bounds the whole
        call, waiting included (None: wait for a connection as long as it
        takes, then for the answer ``call_timeout`` if one was given).

        Raises:
            NotConnected: no connection (fail-fast, timed out, or closed);
                the call was not sent.
            ConnectionLost: the connection ended while the call was in
                flight; it is not sent again (it may have run).
            CallTimeout: sent, but no answer within the timeout.
            the remote exception.
        """
        deadline = _deadline(timeout)
        while True:
            link = self._wait_link(deadline, timeout, self.wait_when_disconnected)
            try:
                d = link.remote.callRemote(_name, *args, **kwargs)
            except DeadReferenceError:
                continue  # raised before sending: the connection had just ended
            left = self._call_timeout if deadline is None else max(deadline - _monotonic(), 0.0)
            try:
                return d.result(timeout=left)
            except CallTimeout:
                d.addErrback(lambda failure: None)  # its late ConnectionLost is no news
                raise

    def callRemote(self, _name: str, *args: Any, **kwargs: Any) -> Deferred:  # noqa: N802
        """Call ``_name`` on :attr:`remote`; a Deferred of the answer.

        It never waits for a connection: while disconnected the Deferred
        fails at once with :class:`NotConnected` (use :meth:`call` or
        :meth:`wait_connected` to wait).
        """
        link = self._usable()
        if link is not None:
            try:
                return link.remote.callRemote(_name, *args, **kwargs)
            except DeadReferenceError:
                pass
        return fail(self._not_connected())

    def close(self, timeout: Optional[float] = 10.0) -> bool:
        """Stop reconnecting and close the current connection.

        Callers waiting for a connection get :class:`NotConnected`, calls
        in flight ConnectionLost. Safe from any thread or greenlet (which
        alone waits) and from the callbacks (which do not wait).

        Returns:
            True once the client's thread has ended (False if it is still
            in a connection attempt after ``timeout``: it ends when that
            attempt does, closing what it made).
        """
        ended = Wakeup()
        with self._lock:
            self._closed = True
            connection = self._open
            waiters, self._waiters = self._waiters, []
            if not self._exited:
                self._exit_waiters.append(ended)
        self._stop.set()
        for wakeup in waiters:
            wakeup.set()
        if connection is not None:
            connection.close()
        if self._in_own_thread():
            return False
        if not self._exited:
            ended.wait(timeout)  # only this greenlet waits, in a gevent hub
        return self._exited and bool(self._thread.join(timeout))  # (it is just returning)

    def __enter__(self) -> "ReconnectingClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._usable() else "reconnecting"
        return f"<ReconnectingClient {self.address} {state}>"

    # ------------------------------------------------------------ callers' side

    def _in_own_thread(self) -> bool:
        return bool(_get_ident() == self._thread.ident)

    def _usable(self) -> Optional[_Link]:
        """The live link this caller may use, or None (lock not needed:
        each field is replaced whole)."""
        if self._closed:
            return None
        link = self._current
        if link is None and self._in_own_thread():
            link = self._setup  # on_connect's own calls use its connection
        if link is None or link.connection.closed:
            return None
        return link

    def _not_connected(self) -> NotConnected:
        if self._closed:
            return NotConnected(f"the ReconnectingClient for {self.address} is closed")
        return NotConnected(f"not connected to {self.address} now (reconnecting; "
                            f"last attempt: {self._last_error})")

    def _wait_link(self, deadline: Optional[float], timeout: Optional[float],
                   wait: bool) -> _Link:
        """The link to call through, waiting for one if ``wait``."""
        link = self._usable()
        if link is not None:  # the usual case: connected
            return link
        while True:
            wakeup = Wakeup() if wait else None
            with self._lock:
                link = self._usable()
                if link is not None:
                    return link
                if wakeup is None or self._closed or self._in_own_thread():
                    raise self._not_connected()  # (its own thread would wait for itself)
                left = None if deadline is None else deadline - _monotonic()
                if left is not None and left <= 0:
                    raise NotConnected(f"no connection to {self.address} within {timeout} s "
                                       f"(last attempt: {self._last_error})")
                self._waiters.append(wakeup)
            try:
                wakeup.wait(left)
            finally:
                with self._lock:
                    self._waiters = [w for w in self._waiters if w is not wakeup]

    # ------------------------------------------------------------ the client's thread

    def _run(self) -> None:
        try:
            self._supervise()
        finally:
            with self._lock:  # even after a bug of ours: nobody waits for ever
                self._closed = self._exited = True
                waiters = self._waiters + self._exit_waiters
                self._waiters, self._exit_waiters = [], []
            for wakeup in waiters:
                wakeup.set()

    def _supervise(self) -> None:
        backoff, failures, delay = self._backoff, 0, 0.0
        while not self._stop.wait(delay):
            outcome = self._attempt()
            if self._closed:
                if isinstance(outcome, _Link):
                    outcome.connection.close()
                return
            if isinstance(outcome, _Link):
                backoff.reset()
                self._keep(outcome, failures)
                failures = 0
                if self._closed:
                    return
                delay = backoff.next()
                log.warning("connection to %s lost; reconnecting in %.2f s", self.address, delay,
                            extra={"reconnect_delay": delay})
                continue
            failures += 1
            delay = backoff.next()
            self._last_error = _describe(outcome)
            log.log(logging.WARNING if failures == 1 else logging.INFO,
                    "connecting to %s failed (attempt %d): %s; next attempt in %.2f s",
                    self.address, failures, self._last_error, delay,
                    extra={"reconnect_delay": delay})

    def _attempt(self) -> Union[_Link, Exception]:
        """Connect and log in once: the link, or why not."""
        try:
            connection = connect(self.address, timeout=self._connect_timeout,
                                 **self._connect_kwargs)
        except Exception as exc:
            return exc
        ended = OSFlag()
        connection.notifyOnDisconnect(ended.set)
        with self._lock:
            if self._closed:
                connection.close()
                return self._not_connected()
            self._open = connection
        try:
            remote = self._log_in(connection)
        except Exception as exc:
            connection.close()
            with self._lock:
                self._open = None
            wrapped = ConnectionFailed(f"login failed: {_describe(exc)}")
            wrapped.__cause__ = exc
            return wrapped
        return _Link(connection, remote, ended)

    def _log_in(self, connection: Connection) -> RemoteReference:
        login = self._login
        if login is None:
            return connection.root
        if isinstance(login, tuple):
            return connection.login(login[0], login[1], timeout=self._connect_timeout)
        if isinstance(login, Mapping):
            arguments = dict(login)
            arguments.setdefault("timeout", self._connect_timeout)
            return connection.login(**arguments)
        return login(connection)

    def _keep(self, link: _Link, failures: int) -> None:
        """Run on_connect, publish ``link``, wait for its end, run on_disconnect."""
        self._setup = link
        self._callback("on_connect", self._on_connect, link.connection, link.remote)
        with self._lock:
            self._setup = None
            if not self._closed:
                self._current = link
            waiters, self._waiters = self._waiters, []
        for wakeup in waiters:
            wakeup.set()
        log.info("connected to %s (after %d failed attempts)", self.address, failures)
        link.ended.wait()
        with self._lock:
            self._current = self._open = None
        link.connection.close()
        reason = ConnectionLost("closed by ReconnectingClient.close()" if self._closed
                                else f"connection to {self.address} lost")
        self._callback("on_disconnect", self._on_disconnect, reason)

    def _callback(self, what: str, callback: Optional[Callable[..., Any]], *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("error in the %s callback of the ReconnectingClient for %s",
                          what, self.address)
