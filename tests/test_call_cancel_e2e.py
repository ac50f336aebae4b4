"""End to end: cancelled and timed-out calls leave nothing behind.

A real :class:`syncpb.Server` on 127.0.0.1 port 0 holds the answers of
``hold`` calls (each returns a Deferred it fires only when the test calls
``release``), so the client gives up first -- ``Deferred.cancel()``,
``Deferred.addTimeout()`` or a blocking call's timeout -- and the answers
arrive late. Those late answers must be discarded, the client's table of
calls in flight (``conn._session._pending``) must end empty, nothing may be
logged, and the connection must still answer. Each scenario runs from a
plain thread and from a greenlet.

Nothing sleeps: calls on one connection are answered in order, so when
``release`` returns, every answer it let go has already been read.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any, Callable, List

import gevent
import gevent.event
import pytest

import syncpb
from syncpb.deferred import Deferred
from syncpb.errors import CancelledError

from hubthread import run_in_gevent_thread

WAIT = 30.0
TINY = 0.001
MANY = 10_000


class Holder(syncpb.Root):
    """Holds the answers of ``hold`` calls until ``release``."""

    def __init__(self) -> None:
        self.held: List[Deferred] = []
        self.sessions: List[Any] = []
        self.disconnected = threading.Event()

    def remote_hold(self, tag: Any) -> Deferred:
        d = Deferred()
        self.held.append(d)
        return d

    def remote_holding(self) -> int:
        return len(self.held)

    def remote_release(self, value: Any) -> int:
        held, self.held = self.held, []
        for d in held:
            d.callback(value)
        return len(held)

    def remote_fail_held(self, message: str) -> int:
        held, self.held = self.held, []
        for d in held:
            d.errback(syncpb.Error(message))
        return len(held)

    def remote_ping(self) -> str:
        return "pong"

    # -- the server's own blocking calls to the client (Session.call_blocking)

    def remote_call_back_with_timeout(self, callee: Any) -> int:
        """Call ``callee.hold()`` with a tiny timeout; return how many calls
        the server's connection still has in flight afterwards."""
        session = callee._pb_session
        if session not in self.sessions:
            self.sessions.append(session)
            callee.notifyOnDisconnect(lambda _: self.disconnected.set())
        try:
            callee.call("hold", timeout=TINY)
        except syncpb.CallTimeout:
            return len(session._pending)
        return -1  # answered in time: cannot happen, the callee holds it

    def remote_server_in_flight(self) -> int:
        return len(self.sessions[0]._pending)


class Callee(syncpb.Referenceable):
    """A client object whose ``hold`` answers only when the test says so."""

    def __init__(self) -> None:
        self.held: List[Deferred] = []
        self.arrived = threading.Semaphore(0)  # released once per hold() run

    def remote_hold(self) -> Deferred:
        d = Deferred()
        self.held.append(d)
        self.arrived.release()
        return d


@pytest.fixture
def holder(server_factory: Any) -> Any:
    root = Holder()
    # the server holds up to MANY answers at once (1000 by default)
    _, address = server_factory(root, limits=syncpb.Limits(max_incoming_calls=MANY + 10))
    return root, address


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> Callable[[], List[str]]:
    """Returns a function listing what was logged at WARNING or above."""
    caplog.set_level(logging.INFO)
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def in_greenlet(scenario: Callable[[], Any]) -> Any:
    """Run ``scenario`` in a greenlet of a hub in its own OS thread."""
    return run_in_gevent_thread(lambda: gevent.spawn(scenario).get(timeout=WAIT), timeout=WAIT)


def in_thread(scenario: Callable[[], Any]) -> Any:
    """Run ``scenario`` in the test's own (plain) thread."""
    return scenario()


Runner = Callable[[Callable[[], Any]], Any]
RUNNERS = pytest.mark.parametrize("run", [in_thread, in_greenlet], ids=["thread", "greenlet"])


def still_works(conn: Any) -> None:
    """Nothing in flight, and the connection answers a plain call."""
    assert conn._session._pending == {}
    assert conn.root.ping() == "pong"
    assert conn._session._pending == {}
    assert not conn.closed


# ---------------------------------------------------------------- one call


@RUNNERS
def test_cancelled_call_discards_its_late_answer(
        holder: Any, connect: Any, quiet: Any, run: Runner) -> None:
    root, address = holder
    conn = connect(address)

    def scenario() -> None:
        d = conn.root.callRemote("hold", "a")
        assert conn.root.holding() == 1  # the server has the call
        assert len(conn._session._pending) == 1
        d.cancel()
        with pytest.raises(CancelledError):
            d.result(timeout=WAIT)
        assert conn._session._pending == {}
        assert conn.root.release("late") == 1  # its answer was read before this one
        still_works(conn)

    run(scenario)
    assert quiet() == []


@RUNNERS
def test_cancelled_call_discards_a_late_error(
        holder: Any, connect: Any, quiet: Any, run: Runner) -> None:
    root, address = holder
    conn = connect(address)

    def scenario() -> None:
        d = conn.root.callRemote("hold", "a")
        assert conn.root.holding() == 1
        d.cancel()
        with pytest.raises(CancelledError):
            d.result(timeout=WAIT)
        assert conn.root.fail_held("late failure") == 1
        still_works(conn)

    run(scenario)
    assert quiet() == []


def test_cancel_from_another_thread_wakes_the_caller_waiting_for_the_answer(
        holder: Any, connect: Any, quiet: Any) -> None:
    root, address = holder
    conn = connect(address)
    d = conn.root.callRemote("hold", "a")
    assert conn.root.holding() == 1
    cancellers: List[threading.Thread] = []

    class Spy(Deferred):
        __slots__ = ()

        def _add_settled_hook(self, hook: Callable[[], None]) -> None:
            super()._add_settled_hook(hook)  # the caller is about to read/wait
            cancellers.append(threading.Thread(target=self.cancel, daemon=True))
            cancellers[-1].start()

    d.__class__ = Spy
    outcome: List[Any] = []

    def wait_for_answer() -> None:
        try:
            d.result()  # no timeout: only the cancel ends this wait
        except CancelledError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_answer, daemon=True)
    waiter.start()
    waiter.join(WAIT)
    assert not waiter.is_alive(), "cancel did not wake the caller"
    assert len(outcome) == 1 and cancellers
    assert conn.root.release("late") == 1
    still_works(conn)
    assert quiet() == []


def test_greenlet_waiting_for_an_answer_is_woken_by_a_cancelling_greenlet(
        holder: Any, connect: Any, quiet: Any) -> None:
    root, address = holder
    conn = connect(address)

    def scenario() -> str:
        d = conn.root.callRemote("hold", "a")
        assert conn.root.holding() == 1
        waiting = gevent.event.Event()

        def wait_for_answer() -> str:
            waiting.set()
            try:
                d.result()  # no timeout: only the cancel ends this wait
            except CancelledError:
                return "cancelled"
            return "answered"

        waiter = gevent.spawn(wait_for_answer)
        assert waiting.wait(WAIT)
        gevent.spawn(d.cancel).join(WAIT)
        assert waiter.join(WAIT) is None and waiter.ready()
        assert conn.root.release("late") == 1
        still_works(conn)
        return waiter.value

    assert in_greenlet(scenario) == "cancelled"
    assert quiet() == []


@RUNNERS
def test_add_timeout_call_discards_its_late_answer(
        holder: Any, connect: Any, quiet: Any, run: Runner) -> None:
    root, address = holder
    conn = connect(address)

    def scenario() -> None:
        d = conn.root.callRemote("hold", "a").addTimeout(TINY)
        with pytest.raises(syncpb.CallTimeout):
            d.result(timeout=WAIT)
        assert conn._session._pending == {}
        assert conn.root.release("late") == 1
        still_works(conn)

    run(scenario)
    assert quiet() == []


@RUNNERS
def test_blocking_call_timeout_discards_its_late_answer(
        holder: Any, connect: Any, quiet: Any, run: Runner) -> None:
    root, address = holder
    conn = connect(address)

    def scenario() -> None:
        with pytest.raises(syncpb.CallTimeout):
            conn.root.call("hold", "a", timeout=TINY)
        assert conn._session._pending == {}  # forgotten at once
        assert conn.root.release("late") == 1
        still_works(conn)

    run(scenario)
    assert quiet() == []


def test_server_side_blocking_call_timeout_forgets_the_call(
        holder: Any, connect: Any, quiet: Any) -> None:
    """The server's own blocking calls (base ``Session.call_blocking``): a
    timed-out call is forgotten at once, its late answer (a value, an
    error, or the connection's end) is discarded without a logged error."""
    root, address = holder
    callee = Callee()
    conn = connect(address)
    assert conn.root.call_back_with_timeout(callee) == 0  # nothing left in flight
    assert callee.arrived.acquire(timeout=WAIT)  # (it runs on the client's dispatcher)
    callee.held.pop().callback("late")  # written before the next call goes out
    assert conn.root.server_in_flight() == 0
    assert conn.root.call_back_with_timeout(callee) == 0
    assert callee.arrived.acquire(timeout=WAIT)
    callee.held.pop().errback(ValueError("late error"))
    assert conn.root.server_in_flight() == 0
    assert conn.root.call_back_with_timeout(callee) == 0
    assert callee.arrived.acquire(timeout=WAIT)
    conn.close()  # this one's answer never comes
    assert root.disconnected.wait(WAIT)
    assert root.sessions[0]._pending == {}
    gc.collect()  # an unconsumed failed Deferred would log its error now
    assert quiet() == []


# ---------------------------------------------------------------- many calls


@RUNNERS
def test_ten_thousand_timed_out_calls_leave_nothing_behind(
        holder: Any, connect: Any, quiet: Any, run: Runner) -> None:
    root, address = holder
    conn = connect(address)

    def scenario() -> None:
        calls = [conn.root.callRemote("hold", i).addTimeout(TINY) for i in range(MANY)]
        timed_out = 0
        for d in calls:
            try:
                d.result(timeout=WAIT)
            except syncpb.CallTimeout:
                timed_out += 1
        assert timed_out == MANY
        assert conn._session._pending == {}
        assert conn.root.release("late") == MANY  # every late answer was read and dropped
        still_works(conn)

    run(scenario)
    assert quiet() == []
