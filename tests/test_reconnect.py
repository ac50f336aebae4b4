"""ReconnectingClient: reconnects, never re-sends, never reaches a new server
through an old reference, waits or fails fast, logs in again, closes cleanly.

Every server is real (127.0.0.1); "the server comes back" is a new
``syncpb.Server`` bound to the same port. Nothing sleeps: tests wait on the
client's callbacks, on log records and on callers reaching their wait
(``waiting_callers`` wraps the client's Wakeup so that each wait is
announced just before it starts). The backoff schedule is tested as a pure
function of a seeded random source, never by timing.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import socket
import subprocess
import sys
import textwrap
import threading

import gevent
import gevent.event
import pytest

import syncpb
from syncpb import reconnect
from syncpb.reconnect import Backoff, NotConnected, ReconnectingClient
from syncpb.waiting import Wakeup

from hubthread import run_in_gevent_thread

WAIT = 10.0


class Thing(syncpb.Referenceable):
    def __init__(self):
        self.pokes = 0

    def remote_poke(self):
        self.pokes += 1
        return self.pokes


class Service(syncpb.Root):
    """Counts every call it receives, by method name."""

    def __init__(self):
        self.calls = collections.Counter()
        self.thing = Thing()
        self.arrived = threading.Semaphore(0)  # released once per hang call
        self.listeners = []

    def remote_add(self, a, b):
        self.calls["add"] += 1
        return a + b

    def remote_thing(self):
        self.calls["thing"] += 1
        return self.thing

    def remote_hang(self):
        self.calls["hang"] += 1
        self.arrived.release()
        gevent.event.Event().wait()  # until the server stops

    def remote_register(self, listener):
        self.calls["register"] += 1
        self.listeners.append(listener)
        return len(self.listeners)

    def remote_tell(self, text):
        return [listener.callRemote("hear", text) for listener in self.listeners][0]


class Watch:
    """The client's callbacks, recorded; tests wait for their counts."""

    def __init__(self):
        self.changed = threading.Condition()
        self.connects = []
        self.disconnects = []

    def on_connect(self, connection, remote):
        with self.changed:
            self.connects.append((connection, remote))
            self.changed.notify_all()

    def on_disconnect(self, reason):
        with self.changed:
            self.disconnects.append(reason)
            self.changed.notify_all()

    def wait(self, connects=0, disconnects=0):
        with self.changed:
            assert self.changed.wait_for(
                lambda: len(self.connects) >= connects and len(self.disconnects) >= disconnects,
                WAIT), (len(self.connects), len(self.disconnects))


class Records(logging.Handler):
    """The syncpb logger's records, for tests that wait for log lines."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.changed = threading.Condition()
        self.records = []

    def emit(self, record):
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def attempts(self, address):
        """The reconnecting delays logged for ``address``, in order."""
        return [r for r in list(self.records)
                if hasattr(r, "reconnect_delay") and r.args[0] == address]

    def wait_for(self, predicate):
        with self.changed:
            assert self.changed.wait_for(predicate, WAIT)


@pytest.fixture
def records():
    handler = Records()
    logger = logging.getLogger("syncpb")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def serve():
    """``serve(root, address="tcp://127.0.0.1:0") -> (server, bound address)``;
    a later server given the same address listens on the same port."""
    servers = []

    def make(root, address="tcp://127.0.0.1:0"):
        server = syncpb.Server(root)
        servers.append(server)
        bound = server.listen(address)
        server.start()
        return server, bound

    yield make
    for server in servers:
        server.stop(timeout=WAIT)


@pytest.fixture
def client_for():
    """``client_for(address, **kwargs)``: a fast-retrying client, closed
    (and its thread ended) when the test ends."""
    clients = []

    def make(address, **kwargs):
        kwargs.setdefault("initial_delay", 0.01)
        kwargs.setdefault("max_delay", 0.05)
        client = ReconnectingClient(address, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        assert client.close(timeout=WAIT)


@pytest.fixture
def waiting_callers(monkeypatch):
    """``wait_for(n)``: return once ``n`` callers have started waiting for a
    connection (each registers its Wakeup with the client, then announces)."""
    changed = threading.Condition()
    count = [0]

    class AnnouncedWakeup(Wakeup):
        __slots__ = ()

        def wait(self, timeout=None):
            with changed:
                count[0] += 1
                changed.notify_all()
            return super().wait(timeout)

    monkeypatch.setattr(reconnect, "Wakeup", AnnouncedWakeup)

    def wait_for(n):
        with changed:
            assert changed.wait_for(lambda: count[0] >= n, WAIT), count[0]
        return count[0]

    wait_for.count = count
    return wait_for


def connected_client(serve, client_for, root=None, **kwargs):
    """A server, a client connected to it and its Watch."""
    root = root or Service()
    server, address = serve(root)
    watch = Watch()
    client = client_for(address, on_connect=watch.on_connect,
                        on_disconnect=watch.on_disconnect, **kwargs)
    watch.wait(connects=1)
    return server, address, client, watch


# ---------------------------------------------------------------- reconnecting

def test_reconnects_when_the_server_comes_back_on_the_same_port(serve, client_for):
    first = Service()
    server, address, client, watch = connected_client(serve, client_for, first)
    assert client.call("add", 1, 2, timeout=WAIT) == 3
    old_connection = client.connection
    server.stop()
    watch.wait(disconnects=1)
    assert isinstance(watch.disconnects[0], syncpb.ConnectionLost)
    assert old_connection.closed

    second = Service()
    serve(second, address)
    watch.wait(connects=2)
    assert client.call("add", 2, 3, timeout=WAIT) == 5
    assert client.connection is not old_connection and client.connection is watch.connects[1][0]
    assert (first.calls, second.calls) == ({"add": 1}, {"add": 1})


def test_old_references_are_dead_and_never_reach_the_new_server(serve, client_for):
    first = Service()
    server, address, client, watch = connected_client(serve, client_for, first)
    old_root, old_remote = client.root, client.remote
    old_thing = client.call("thing", timeout=WAIT)  # a reference returned by a call
    assert old_thing.poke() == 1
    server.stop()
    second = Service()
    serve(second, address)
    watch.wait(connects=2)

    attempts = [
        lambda: old_root.add(1, 2),
        lambda: old_root.call("add", 1, 2, timeout=WAIT),
        lambda: old_root.callRemote("add", 1, 2),
        lambda: old_root.callRemoteNoAnswer("add", 1, 2),
        lambda: old_remote.add(1, 2),
        lambda: old_thing.poke(),
        lambda: old_thing.callRemote("poke"),
    ]
    for attempt in attempts:
        with pytest.raises(syncpb.DeadReferenceError):
            attempt()
    assert second.calls == {} and second.thing.pokes == 0  # nothing reached it

    assert client.root != old_root
    assert client.call("add", 1, 1, timeout=WAIT) == 2
    assert client.call("thing", timeout=WAIT).poke() == 1  # the new server's own Thing
    assert second.calls == {"add": 1, "thing": 1}
    assert (first.calls, first.thing.pokes) == ({"thing": 1}, 1)


def test_a_call_in_flight_fails_with_connection_lost_and_is_not_sent_again(serve, client_for):
    first = Service()
    server, address, client, watch = connected_client(serve, client_for, first)
    outcome = {}

    def blocked_call():
        try:
            outcome["value"] = client.call("hang", timeout=WAIT)
        except Exception as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=blocked_call)
    caller.start()
    assert first.arrived.acquire(timeout=WAIT)
    deferred = client.callRemote("hang")  # callback style, also in flight
    assert first.arrived.acquire(timeout=WAIT)
    server.stop(timeout=0)  # no grace for the calls in flight: they never end
    caller.join(WAIT)
    assert not caller.is_alive()
    error = outcome["error"]
    assert isinstance(error, syncpb.ConnectionLost) and not isinstance(error, NotConnected)
    with pytest.raises(syncpb.ConnectionLost):
        deferred.result(timeout=WAIT)

    second = Service()
    serve(second, address)
    watch.wait(connects=2)
    # A re-sent call would have arrived before this one, on the same connection.
    assert client.call("add", 1, 1, timeout=WAIT) == 2
    assert first.calls["hang"] == 2
    assert second.calls == {"add": 1}


# ---------------------------------------------------------------- while disconnected

def test_fail_fast_while_disconnected(serve, client_for):
    server, address, client, watch = connected_client(serve, client_for,
                                                      wait_when_disconnected=False)
    server.stop()
    watch.wait(disconnects=1)
    with pytest.raises(NotConnected, match="not connected to .*reconnecting") as caught:
        client.call("add", 1, 2, timeout=WAIT)
    assert isinstance(caught.value, syncpb.ConnectionFailed)
    with pytest.raises(NotConnected):
        client.callRemote("add", 1, 2).result(timeout=WAIT)
    with pytest.raises(NotConnected):
        client.root
    assert client.connection is None

    second = Service()
    serve(second, address)
    watch.wait(connects=2)
    assert client.call("add", 1, 2, timeout=WAIT) == 3
    assert second.calls == {"add": 1}  # the refused calls were never sent


def test_a_waiting_call_goes_to_the_next_connection(serve, client_for, waiting_callers):
    server, address, client, watch = connected_client(serve, client_for)
    server.stop()
    watch.wait(disconnects=1)
    with pytest.raises(NotConnected, match="no connection to .* within 0.05 s"):
        client.call("add", 1, 2, timeout=0.05)  # nobody serves: it times out, unsent
    outcome = {}
    caller = threading.Thread(
        target=lambda: outcome.update(value=client.call("add", 2, 3, timeout=WAIT)))
    caller.start()
    waiting_callers(2)  # the timed-out one, then this one
    second = Service()
    serve(second, address)
    caller.join(WAIT)
    assert outcome == {"value": 5}
    assert second.calls == {"add": 1}
    assert client.wait_connected(WAIT) is client.connection


def test_eight_threads_wait_for_the_next_connection(serve, client_for, waiting_callers):
    server, address, client, watch = connected_client(serve, client_for)
    server.stop()
    watch.wait(disconnects=1)
    results, errors = {}, []

    def caller(i):
        try:
            results[i] = [client.call("add", i, n, timeout=WAIT) for n in range(21)]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    waiting_callers(8)
    second = Service()
    serve(second, address)
    for thread in threads:
        thread.join(WAIT)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert results == {i: [i + n for n in range(21)] for i in range(8)}
    assert second.calls == {"add": 8 * 21}


def test_eight_greenlets_wait_and_block_only_themselves(serve, client_for, waiting_callers):
    server, address, client, watch = connected_client(serve, client_for)
    server.stop()
    watch.wait(disconnects=1)
    hub_ran = threading.Event()
    second = Service()

    def restart():
        if hub_ran.wait(WAIT):
            serve(second, address)

    def scenario():
        results = {}

        def caller(i):
            results[i] = client.call("add", i, 100, timeout=WAIT)

        callers = [gevent.spawn(caller, i) for i in range(8)]

        def witness():
            # Runs after every caller reached its wait: had a wait blocked
            # this hub's thread, it would never run.
            seen = waiting_callers.count[0]
            hub_ran.set()
            return seen

        seen = gevent.spawn(witness)
        gevent.joinall(callers + [seen], timeout=WAIT, raise_error=True)
        closer = gevent.spawn(client.close, WAIT)  # close() waits as a greenlet too
        return results, seen.value, closer.get(timeout=WAIT)

    restarter = threading.Thread(target=restart)
    restarter.start()
    results, waiting_when_witnessed, closed = run_in_gevent_thread(scenario)
    restarter.join(WAIT)
    assert waiting_when_witnessed == 8 and closed is True
    assert results == {i: i + 100 for i in range(8)}
    assert second.calls == {"add": 8}


# ---------------------------------------------------------------- logins and callbacks

class User(syncpb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_hello(self, text):
        return f"{text}, {self.name}!"


class Realm:
    def __init__(self):
        self.logins = []

    def requestAvatar(self, avatar_id, mind, *interfaces):  # noqa: N802 - Twisted's name
        name = "anonymous" if avatar_id is None else avatar_id.decode()
        self.logins.append(name)
        return interfaces[0], User(name), lambda: None


def make_portal(realm):
    return syncpb.Portal(realm, [syncpb.InMemoryPasswordChecker(alice="wonderland"),
                                 syncpb.AllowAnonymousAccess()])


@pytest.mark.parametrize("login,name", [
    (("alice", "wonderland"), "alice"),
    ({"username": "alice", "password": "wonderland", "mind": None}, "alice"),
    (lambda connection: connection.login_anonymous(timeout=WAIT), "anonymous"),
])
def test_the_login_is_done_again_after_each_connection(serve, client_for, login, name):
    first = Realm()
    server, address = serve(make_portal(first))
    watch = Watch()
    client = client_for(address, login=login, on_connect=watch.on_connect,
                        on_disconnect=watch.on_disconnect)
    client.wait_connected(WAIT)
    assert client.call("hello", "hi", timeout=WAIT) == f"hi, {name}!"
    assert client.remote.hello("yo") == f"yo, {name}!"
    assert client.remote != client.root  # the avatar, not the portal's root
    assert watch.connects[0][1] == client.remote
    server.stop()
    second = Realm()
    serve(make_portal(second), address)
    watch.wait(connects=2)
    assert client.call("hello", "again", timeout=WAIT) == f"again, {name}!"
    assert (first.logins, second.logins) == ([name], [name])


def test_a_refused_login_is_retried_and_logged_without_a_traceback(serve, client_for, records):
    server, address = serve(make_portal(Realm()))
    client = client_for(address, login=("alice", "wrong"))
    records.wait_for(lambda: len(records.attempts(client.address)) >= 2)
    first, second = records.attempts(client.address)[:2]
    assert "UnauthorizedLogin" in first.getMessage() and first.exc_info is None
    assert (first.levelno, second.levelno) == (logging.WARNING, logging.INFO)
    with pytest.raises(NotConnected, match="UnauthorizedLogin"):
        client.wait_connected(0.01)


def test_on_connect_sets_up_before_callers_see_the_connection(serve, client_for):
    """A callback object is registered again on each connection, by
    on_connect through the client itself, before anyone else can call."""
    heard = []

    class Listener(syncpb.Referenceable):
        def remote_hear(self, text):
            heard.append(text)
            return len(heard)

    listener = Listener()
    holder = {}
    made = threading.Event()
    lost = threading.Event()

    def register(connection, remote):
        assert made.wait(WAIT)  # the constructor has returned the client
        holder["client"].call("register", listener, timeout=WAIT)

    first = Service()
    server, address = serve(first)
    holder["client"] = client = client_for(address, on_connect=register,
                                           on_disconnect=lambda reason: lost.set())
    made.set()
    client.wait_connected(WAIT)
    assert len(first.listeners) == 1
    server.stop()
    assert lost.wait(WAIT)
    second = Service()
    serve(second, address)
    client.wait_connected(WAIT)
    assert len(second.listeners) == 1  # registered before this returned
    assert client.call("tell", "news", timeout=WAIT) == 1
    assert heard == ["news"]


def test_errors_in_callbacks_are_logged_not_propagated(serve, client_for, records):
    def broken(*args):
        raise RuntimeError("callback bug")

    server, address = serve(Service())
    client = client_for(address, on_connect=broken, on_disconnect=broken)
    assert client.call("add", 1, 2, timeout=WAIT) == 3
    assert client.close(timeout=WAIT)
    bugs = [r for r in records.records if "callback of the ReconnectingClient" in r.getMessage()]
    assert [b.exc_info[0] for b in bugs] == [RuntimeError, RuntimeError]


# ---------------------------------------------------------------- backoff

def test_the_backoff_grows_and_stays_bounded():
    bare = Backoff(0.1, 30.0, 2.0, jitter=0.0)
    assert [bare.delay(n) for n in range(11)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0])
    assert bare.delay(10**6) == bare.delay(5000) == 30.0  # no overflow
    assert Backoff(1, 5, factor=1).delay(50) * 2 >= 1  # factor 1: a constant schedule

    jittered = Backoff(0.1, 30.0, 2.0, jitter=0.5, rng=random.Random(7))
    schedule = [jittered.delay(n) for n in range(40)]
    for n, value in enumerate(schedule):
        assert 0.5 * bare.base(n) <= value <= bare.base(n) <= 30.0
    assert len(set(schedule)) == len(schedule)  # jittered: no two alike
    again = Backoff(0.1, 30.0, 2.0, jitter=0.5, rng=random.Random(7))
    assert [again.delay(n) for n in range(40)] == schedule  # seeded: reproducible

    full = Backoff(0.1, 30.0, 2.0, jitter=1.0, rng=random.Random(3))
    assert all(0.0 <= full.delay(n) <= bare.base(n) for n in range(40))


def test_the_schedule_starts_again_after_a_reset():
    backoff = Backoff(1.0, 8.0, 2.0, jitter=0.0)
    assert [backoff.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    backoff.reset()
    assert [backoff.next() for _ in range(2)] == [1.0, 2.0]


@pytest.mark.parametrize("kwargs", [
    {"initial": 0}, {"initial": 2, "maximum": 1}, {"factor": 0.5},
    {"jitter": -0.1}, {"jitter": 1.5},
])
def test_bad_backoff_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_bad_client_arguments_are_refused_before_any_thread_starts():
    with pytest.raises(ValueError):
        ReconnectingClient("nonsense://where")
    with pytest.raises(TypeError, match="connect_timeout"):
        ReconnectingClient("tcp://127.0.0.1:1", timeout=5)
    with pytest.raises(TypeError, match="login"):
        ReconnectingClient("tcp://127.0.0.1:1", login=("only a user",))
    with pytest.raises(ValueError, match="jitter"):
        ReconnectingClient("tcp://127.0.0.1:1", jitter=2)
    with pytest.raises(TypeError, match="bogus"):  # checked against connect()'s signature
        ReconnectingClient("tcp://127.0.0.1:1", bogus=1)


def test_connect_options_pass_through(serve, client_for):
    """call_timeout= reaches connect() (and is call()'s default timeout)."""
    service = Service()
    server, address = serve(service)
    client = client_for(address, call_timeout=0.05)
    client.wait_connected(WAIT)
    with pytest.raises(syncpb.CallTimeout):
        client.call("hang")  # never answers: the connection's call_timeout ends the wait
    with pytest.raises(syncpb.CallTimeout):
        client.root.hang()
    assert client.call("add", 1, 2) == 3  # the connection is still fine
    server.stop(timeout=0)  # the hanging calls never finish


@pytest.fixture
def refusing_port():
    """A port bound but not listening: connecting is refused at once. The
    socket is handed over so the test can free the port for a server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_failed_attempts_follow_the_schedule_which_resets_after_a_connection(
        serve, client_for, records, refusing_port):
    address = f"tcp://127.0.0.1:{refusing_port.getsockname()[1]}"
    client = client_for(address, initial_delay=0.001, max_delay=0.004, jitter=0.0)
    records.wait_for(lambda: len(records.attempts(client.address)) >= 5)
    logged = records.attempts(client.address)[:5]
    assert [r.reconnect_delay for r in logged] == [0.001, 0.002, 0.004, 0.004, 0.004]
    assert [r.args[1] for r in logged] == [1, 2, 3, 4, 5]  # attempt numbers
    assert all("Connection refused" in r.getMessage() and r.exc_info is None for r in logged)

    refusing_port.close()
    server, _ = serve(Service(), address)
    client.wait_connected(WAIT)
    seen = len(records.attempts(client.address))
    server.stop()
    records.wait_for(lambda: any("lost" in r.getMessage()
                                 for r in records.attempts(client.address)[seen:]))
    lost = [r for r in records.attempts(client.address)[seen:] if "lost" in r.getMessage()]
    assert lost[0].reconnect_delay == 0.001  # the schedule started again


# ---------------------------------------------------------------- closing

def test_close_ends_the_thread_the_connection_and_its_threads(serve, client_for):
    server, address, client, watch = connected_client(serve, client_for)
    listener = syncpb.Referenceable()
    assert client.call("register", listener, timeout=WAIT) == 1  # starts a dispatcher thread
    connection = client.connection
    with client:
        pass  # the context manager closes it
    assert client.closed and connection.closed
    assert not client._thread.is_alive()
    session = connection._session
    assert session._background.join(WAIT)
    for thread in session._dispatcher.threads:
        assert thread.join(WAIT)
    assert [str(r) for r in watch.disconnects] == ["closed by ReconnectingClient.close()"]
    with pytest.raises(NotConnected, match="closed"):
        client.call("add", 1, 2, timeout=WAIT)
    with pytest.raises(NotConnected, match="closed"):
        client.wait_connected(WAIT)
    assert client.close(timeout=WAIT)  # a second close is harmless


def test_close_wakes_waiting_callers_and_interrupts_the_backoff(client_for, records,
                                                                refusing_port, waiting_callers):
    address = f"tcp://127.0.0.1:{refusing_port.getsockname()[1]}"
    client = client_for(address, initial_delay=60.0, max_delay=60.0)
    records.wait_for(lambda: records.attempts(client.address))  # now in a 30-60 s delay
    outcome = {}

    def caller():
        try:
            client.call("add", 1, 2)  # no timeout: only close() ends this wait
        except NotConnected as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=caller)
    thread.start()
    waiting_callers(1)
    assert client.close(timeout=WAIT)  # True: the thread left its delay
    thread.join(WAIT)
    assert "closed" in str(outcome["error"])


# ---------------------------------------------------------------- monkey-patched

MONKEY_SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import json
    import gevent
    import syncpb
    from syncpb.osthreads import OSFlag
    from syncpb.reconnect import ReconnectingClient

    real_ident = monkey.get_original("_thread", "get_ident")

    class Adder(syncpb.Root):
        def remote_add(self, a, b):
            return a + b

    first = syncpb.Server(Adder())
    address = first.listen("tcp://127.0.0.1:0")
    first.start()
    lost, threads = OSFlag(), []
    client = ReconnectingClient(address, initial_delay=0.01, max_delay=0.05,
                                on_connect=lambda c, r: threads.append(real_ident()),
                                on_disconnect=lambda reason: lost.set())
    client.wait_connected(10)
    before = client.call("add", 1, 2, timeout=10)
    first.stop()
    assert lost.wait(10)
    waiting = gevent.spawn(client.call, "add", 2, 3, timeout=10)
    gevent.idle()  # it runs up to its wait
    second = syncpb.Server(Adder())
    second.listen(address)
    second.start()
    was_waiting = not waiting.ready()
    after = waiting.get(timeout=10)
    report = {"patched": monkey.is_module_patched("socket"), "before": before,
              "after": after, "was_waiting": was_waiting, "connects": len(threads),
              "own_thread": all(t != real_ident() for t in threads),
              "closed": client.close(timeout=10)}
    second.stop()
    print(json.dumps(report))
""")


def test_a_monkey_patched_program(tmp_path):
    script = tmp_path / "patched.py"
    script.write_text(MONKEY_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=50, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "patched": True, "before": 3, "after": 5, "was_waiting": True, "connects": 2,
        "own_thread": True, "closed": True}
