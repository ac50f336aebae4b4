"""End to end: calls, values, errors and the life of a connection.

A real :class:`syncpb.Server` (its own thread and gevent hub) serves on
127.0.0.1 port 0 or a unix socket in ``tmp_path``; the tests are plain
threaded clients. Nothing sleeps: a server method that must "take a while"
waits on a *gate*, a ``gevent.event.Event`` created in the server's hub
thread and opened by another remote call (or by nobody).
"""

import datetime
import decimal
import math
import socket
import threading
import time

import pytest

import syncpb

from gates import Gates

WAIT = 5.0  # upper bound for anything that should happen "at once"


# ---------------------------------------------------------------- the quickstart


def test_quickstart_exactly_as_documented():
    class Calculator(syncpb.Root):
        def remote_calculate(self, a, b):
            return a + b

    server = syncpb.Server(Calculator())
    address = server.listen("tcp://127.0.0.1:0")
    server.start()
    try:
        conn = syncpb.connect(address)
        try:
            assert conn.root.calculate(1, 2) == 3
            d = conn.root.callRemote("calculate", 1, 2)
            d.addCallback(lambda r: r * 10)
            assert d.result(timeout=5) == 30
        finally:
            conn.close()
        assert conn.closed
    finally:
        server.stop()


def test_quickstart_with_context_managers():
    class Calculator(syncpb.Root):
        def remote_calculate(self, a, b):
            return a + b

    with syncpb.Server(Calculator()) as server:
        address = server.listen("tcp://127.0.0.1:0")
        assert address.startswith("tcp://127.0.0.1:") and not address.endswith(":0")
        assert server.addresses == [address]
        server.start()
        with syncpb.connect(address, timeout=5) as conn:
            assert conn.root.calculate(40, 2) == 42
            assert server.connection_count == 1
        assert conn.closed


# ---------------------------------------------------------------- a test service


class Overdrawn(syncpb.Error):
    """An application error: defined here, it must come back as itself."""


def _explode_with_a_findable_name():
    raise ValueError("bad value 42")


class Service(Gates, syncpb.Root):
    """The server root most tests use. Runs in the server's hub thread."""

    def __init__(self):
        self.entered = threading.Event()   # set (from the hub) when a gate is waited on
        self.hits = 0

    def on_gate_waited(self, name):
        self.entered.set()

    def remote_calculate(self, a, b):
        return a + b

    def remote_echo(self, value):
        return value

    def remote_kw(self, a, b=2, *, c=3, **rest):
        return {"a": a, "b": b, "c": c, "rest": rest}

    def remote_identity_report(self, value):
        """Facts about shared/cyclic structure, as the server decoded it."""
        return {
            "self_contained": value[0] is value,
            "shared": value[1] is value[2],
        }

    def remote_length(self, value):
        return len(value)

    def remote_hit(self):
        self.hits += 1
        return self.hits

    def remote_fail_value(self):
        raise ValueError("bad value 42")

    def remote_fail_deep(self):
        _explode_with_a_findable_name()

    def remote_overdraw(self, amount):
        raise Overdrawn(f"balance too low for {amount}")

    # a Deferred that another thread fires
    def remote_later(self):
        d = syncpb.Deferred()
        self.later_deferred = d
        self.later_created.set()
        return d


@pytest.fixture
def service():
    root = Service()
    root.later_created = threading.Event()
    return root


@pytest.fixture
def conn(service, server_factory, connect):
    _, address = server_factory(service)
    return connect(address)


# ---------------------------------------------------------------- calls


def test_keyword_arguments(conn):
    assert conn.root.kw(1) == {"a": 1, "b": 2, "c": 3, "rest": {}}
    assert conn.root.kw(1, b=20, c=30, extra="x") == {
        "a": 1, "b": 20, "c": 30, "rest": {"extra": "x"}}
    d = conn.root.callRemote("kw", a=5, c=7)
    assert d.result(timeout=WAIT) == {"a": 5, "b": 2, "c": 7, "rest": {}}
    assert conn.root.call("kw", 9, timeout=WAIT, b=8) == {"a": 9, "b": 8, "c": 3, "rest": {}}
    # a missing argument is the remote method's TypeError
    with pytest.raises(syncpb.RemoteError) as info:
        conn.root.kw()
    assert info.value.remote_type == "builtins.TypeError"


def test_call_remote_no_answer_then_answered_call(conn, service):
    assert conn.root.callRemoteNoAnswer("hit") is None
    # calls on one connection run in order: the answered call sees the first
    assert conn.root.hit() == 2


def test_callremote_accepts_bytes_method_name(conn):
    assert conn.root.callRemote(b"calculate", 2, 3).result(timeout=WAIT) == 5


JELLY_VALUES = [
    None, True, False,
    0, 1, -1, 2**31, -2**31 - 1, 2**63, 2**400, -2**400,
    0.0, -2.5, 1e300, float("inf"), float("-inf"),
    "", "plain", "non-ASCII: héllo ☃ 𝄞 中文",
    b"", b"\x00\xff raw bytes",
    [], [1, "two", 3.0, None], (), (1, (2, (3,))),
    {}, {"a": 1, 2: "b", (3, 4): [5]},
    set(), {1, 2, 3}, frozenset(), frozenset({"x", "y"}),
    decimal.Decimal("0"), decimal.Decimal("-1234.5678"), decimal.Decimal("1E+30"),
    datetime.datetime(2024, 2, 29, 23, 59, 58, 999999),
    datetime.date(1999, 12, 31), datetime.time(0, 0, 1, 500),
    datetime.timedelta(days=-3, seconds=5, microseconds=7),
    {"nested": [{"deep": (1, {2, 3}, frozenset({4}))}, [b"x", "y"]]},
]


@pytest.mark.parametrize("value", JELLY_VALUES, ids=lambda v: type(v).__name__)
def test_every_jelly_type_round_trips(conn, value):
    result = conn.root.echo(value)
    assert result == value
    assert type(result) is type(value)


def test_nan_round_trips(conn):
    assert math.isnan(conn.root.echo(float("nan")))


def test_echo_all_values_in_one_message(conn):
    assert conn.root.echo(JELLY_VALUES) == JELLY_VALUES


def test_self_containing_list_and_shared_sub_objects(conn):
    shared = {"k": [1, 2]}
    value = [None, shared, shared]
    value[0] = value

    # the server sees the structure we sent
    assert conn.root.identity_report(value) == {"self_contained": True, "shared": True}

    # and the echo comes back with the same shape
    back = conn.root.echo(value)
    assert back[0] is back
    assert back[1] is back[2]
    assert back[1] == {"k": [1, 2]}
    assert back is not value

    # a dict holding itself and a list shared by two keys
    d = {"a": [9]}
    d["me"] = d
    d["b"] = d["a"]
    back = conn.root.echo(d)
    assert back["me"] is back
    assert back["a"] is back["b"] == [9]


# ---------------------------------------------------------------- errors


def test_builtin_exception_arrives_as_remote_error(conn):
    with pytest.raises(syncpb.RemoteError) as info:
        conn.root.fail_value()
    err = info.value
    assert err.remote_type == "builtins.ValueError"
    assert err.message == "bad value 42"
    assert "builtins.ValueError" in err.remote_parents
    assert "builtins.Exception" in err.remote_parents
    assert str(err) == "builtins.ValueError: bad value 42"
    assert isinstance(err, syncpb.SyncPBError)
    assert not isinstance(err, ValueError)
    # the connection is fine afterwards
    assert conn.root.calculate(1, 1) == 2


def test_error_subclass_arrives_as_itself(conn):
    with pytest.raises(Overdrawn) as info:
        conn.root.overdraw(100)
    assert type(info.value) is Overdrawn
    assert isinstance(info.value, syncpb.Error)
    assert str(info.value) == "balance too low for 100"
    assert info.value.args == ("balance too low for 100",)


def test_failure_in_errback(conn):
    seen = {}

    def errback(failure):
        seen["failure"] = failure
        seen["check"] = failure.check(KeyError, ValueError)
        seen["check_none"] = failure.check(KeyError, TypeError)
        seen["check_name"] = failure.check("builtins.ValueError")
        seen["trapped"] = failure.trap(ValueError)
        seen["message"] = failure.getErrorMessage()
        return "recovered"

    d = conn.root.callRemote("fail_value").addErrback(errback)
    assert d.result(timeout=WAIT) == "recovered"
    failure = seen["failure"]
    assert isinstance(failure, syncpb.Failure)
    assert failure.type is syncpb.RemoteError
    assert isinstance(failure.value, syncpb.RemoteError)
    assert seen["check"] is ValueError
    assert seen["check_none"] is None
    assert seen["check_name"] == "builtins.ValueError"
    assert seen["trapped"] is ValueError
    assert seen["message"] == "bad value 42"


def test_trap_mismatch_passes_failure_down_the_chain(conn):
    calls = []

    def wrong_trap(failure):
        calls.append("wrong")
        failure.trap(KeyError)          # re-raises: does not match
        calls.append("not reached")

    def right_trap(failure):
        calls.append("right")
        return failure.trap(Overdrawn)

    d = conn.root.callRemote("overdraw", 5)
    d.addErrback(wrong_trap).addErrback(right_trap)
    assert d.result(timeout=WAIT) is Overdrawn
    assert calls == ["wrong", "right"]


def test_no_such_method(conn):
    with pytest.raises(syncpb.NoSuchMethod) as info:
        conn.root.does_not_exist(1)
    assert "does_not_exist" in str(info.value)
    assert isinstance(info.value, AttributeError)

    d = conn.root.callRemote("also_missing")
    with pytest.raises(syncpb.NoSuchMethod):
        d.result(timeout=WAIT)
    # a non-remote_ attribute of the root is not callable remotely either
    with pytest.raises(syncpb.NoSuchMethod):
        conn.root.rootObject(None)
    assert conn.root.calculate(2, 2) == 4


def test_no_remote_traceback_by_default(conn):
    with pytest.raises(syncpb.RemoteError) as info:
        conn.root.fail_deep()
    assert info.value.remote_traceback is None
    with pytest.raises(Overdrawn) as info2:
        conn.root.overdraw(1)
    assert getattr(info2.value, "remote_traceback", None) is None


def test_remote_traceback_when_server_opts_in(server_factory, connect):
    _, address = server_factory(Service(), unsafe_tracebacks=True)
    conn = connect(address)
    with pytest.raises(syncpb.RemoteError) as info:
        conn.root.fail_deep()
    tb = info.value.remote_traceback
    assert tb is not None
    assert "_explode_with_a_findable_name" in tb
    assert "remote_fail_deep" in tb
    assert "bad value 42" in tb
    with pytest.raises(Overdrawn) as info2:
        conn.root.overdraw(1)
    assert "remote_overdraw" in info2.value.remote_traceback


# ---------------------------------------------------------------- waiting


def test_remote_method_returning_a_deferred_fired_by_another_thread(conn, service):
    order = []
    d = conn.root.callRemote("later")
    d.addCallback(lambda value: order.append(("answer", value)) or value)
    assert service.later_created.wait(WAIT)
    # the server method has returned its Deferred, but nobody fired it: no answer yet
    with pytest.raises(syncpb.CallTimeout):
        d.result(timeout=0.2)
    assert order == []

    def fire():
        order.append("fired")
        service.later_deferred.callback({"done": True})

    firer = threading.Thread(target=fire)
    firer.start()
    firer.join(WAIT)
    assert d.result(timeout=WAIT) == {"done": True}
    assert order == ["fired", ("answer", {"done": True})]
    # the connection is still usable
    assert conn.root.calculate(3, 4) == 7


def test_remote_method_returning_a_deferred_that_fails(conn, service):
    d = conn.root.callRemote("later")
    assert service.later_created.wait(WAIT)
    threading.Thread(target=service.later_deferred.errback,
                     args=(Overdrawn("later failure"),)).start()
    with pytest.raises(Overdrawn, match="later failure"):
        d.result(timeout=WAIT)


def test_gather_many_in_flight_calls(conn):
    count = 300
    deferreds = [conn.root.callRemote("echo", (i, str(i))) for i in range(count)]
    results = syncpb.gather(deferreds).result(timeout=10)
    assert results == [(i, str(i)) for i in range(count)]


def test_gather_fails_with_first_failure(conn):
    ds = [conn.root.callRemote("echo", 1), conn.root.callRemote("overdraw", 2),
          conn.root.callRemote("echo", 3)]
    with pytest.raises(Overdrawn):
        syncpb.gather(ds).result(timeout=WAIT)


def test_call_timeout_then_connection_still_works(conn):
    d = conn.root.callRemote("wait_gate", "slow")
    assert conn.root.until_waiting("slow") is True   # the server method is now blocked
    start = time.monotonic()
    with pytest.raises(syncpb.CallTimeout):
        d.result(timeout=0.3)
    assert time.monotonic() - start < WAIT
    assert isinstance(syncpb.CallTimeout("x"), TimeoutError)
    assert not d.called
    # other calls complete while that one waits
    assert conn.root.calculate(5, 6) == 11
    # release the gate; the timed-out call still gets its answer
    assert conn.root.open_gate("slow") is True
    assert d.result(timeout=WAIT) == "slow passed"
    assert conn.root.echo("still fine") == "still fine"
    assert not conn.closed


# ---------------------------------------------------------------- addresses and serving


def test_listen_twice_tcp_and_unix_serve_the_same_root(service, tmp_path, connect):
    server = syncpb.Server(service)
    try:
        tcp = server.listen("tcp://127.0.0.1:0")
        unix = server.listen(f"unix://{tmp_path}/both.sock")
        assert unix == f"unix://{tmp_path}/both.sock"
        assert server.addresses == [tcp, unix]
        server.start()
        over_tcp, over_unix = connect(tcp), connect(unix)
        assert over_tcp.root.hit() == 1
        assert over_unix.root.hit() == 2
        assert over_tcp.root.hit() == 3
        assert server.connection_count == 2
    finally:
        server.stop()


def test_listen_after_start(service, server_factory, connect, tmp_path):
    server, first = server_factory(service)
    second = server.listen(f"unix://{tmp_path}/late.sock")
    assert connect(second).root.hit() == 1
    assert connect(first).root.hit() == 2


def test_host_port_tuple_address(service, server_factory, connect):
    _, address = server_factory(service)
    port = int(address.rsplit(":", 1)[1])
    conn = connect(("127.0.0.1", port))
    assert conn.root.calculate(20, 22) == 42


def test_unix_socket_address(service, server_factory, connect):
    _, address = server_factory(service, unix=True)
    assert address.startswith("unix:///")
    conn = connect(address)
    assert conn.root.calculate(2, 3) == 5


def test_large_argument_arrives_over_several_reads(service, server_factory, connect):
    # 500 kB (under Limits().size_limit) cannot arrive in one server recv()
    _, address = server_factory(service)
    conn = connect(address)
    assert conn.root.length("x" * 500_000) == 500_000
    assert conn.root.length([b"y" * 1000] * 400) == 400


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_large_answer_arrives_over_several_reads(service, server_factory, connect, unix):
    # Regression: an answer split across recv() chunks used to be rejected as
    # "answer for unknown request id" (the id left _waiting before the payload
    # was complete) and the connection was closed.
    _, address = server_factory(service, unix=unix)
    conn = connect(address)
    big = "x" * 500_000          # more than any single recv() (RECV_SIZE) returns
    assert conn.root.echo(big) == big
    assert conn.root.calculate(1, 2) == 3


def test_large_error_arrives_over_several_reads(service, server_factory, connect):
    _, address = server_factory(service)
    conn = connect(address)
    with pytest.raises(Overdrawn) as info:
        conn.root.overdraw("y" * 500_000)
    assert str(info.value) == "balance too low for " + "y" * 500_000


def test_serve_forever_in_own_thread_stopped_from_test_thread(service):
    server = syncpb.Server(service)
    address = server.listen("tcp://127.0.0.1:0")
    errors = []

    def serve():
        try:
            server.serve_forever()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        # connect() waits for the handshake, so the server is serving after this
        conn = syncpb.connect(address, timeout=WAIT)
        lost = threading.Event()
        conn.notifyOnDisconnect(lost.set)
        assert conn.root.calculate(1, 2) == 3
    finally:
        server.stop()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert errors == []
    assert lost.wait(WAIT)
    assert conn.closed
    with pytest.raises(syncpb.ConnectionFailed):
        syncpb.connect(address, timeout=WAIT)


def test_connect_to_closed_port_fails_quickly():
    # A bound TCP socket that does not listen refuses connections (RST); we
    # keep it open so no one else can take the port meanwhile.
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    try:
        start = time.monotonic()
        with pytest.raises(syncpb.ConnectionFailed) as info:
            syncpb.connect(f"tcp://127.0.0.1:{port}", timeout=WAIT)
        assert time.monotonic() - start < WAIT / 2
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(syncpb.ConnectionFailed):
            syncpb.connect(("127.0.0.1", port), timeout=WAIT)
    finally:
        blocker.close()


def test_connect_to_missing_unix_socket_fails(tmp_path):
    with pytest.raises(syncpb.ConnectionFailed):
        syncpb.connect(f"unix://{tmp_path}/nobody-here", timeout=WAIT)


@pytest.mark.parametrize("address", ["127.0.0.1:80", "unix://relative/path", ("host",)])
def test_bad_address_is_a_value_error(address):
    with pytest.raises(ValueError):
        syncpb.connect(address, timeout=WAIT)


# ---------------------------------------------------------------- losing the connection


def test_server_stop_fails_pending_calls_and_kills_the_connection(service, server_factory,
                                                                  connect):
    server, address = server_factory(service)
    conn = connect(address)
    disconnected = threading.Event()
    conn.notifyOnDisconnect(disconnected.set)

    d = conn.root.callRemote("wait_gate", "never")   # nobody ever opens this gate
    assert service.entered.wait(WAIT)
    assert not conn.closed

    server.stop(timeout=0.2)  # the call never finishes: its grace runs out

    with pytest.raises(syncpb.ConnectionLost):
        d.result(timeout=WAIT)
    assert disconnected.wait(WAIT)
    assert conn.closed
    # after the loss, calls fail synchronously
    with pytest.raises(syncpb.DeadReferenceError):
        conn.root.callRemote("calculate", 1, 2)
    with pytest.raises(syncpb.DeadReferenceError):
        conn.root.calculate(1, 2)
    with pytest.raises(syncpb.DeadReferenceError):
        conn.root.callRemoteNoAnswer("calculate", 1, 2)
    # a disconnect callback registered late runs at once
    late = []
    conn.notifyOnDisconnect(lambda: late.append(True))
    assert late == [True]


def test_pending_callback_style_call_fails_with_connection_lost(service, server_factory,
                                                                connect):
    server, address = server_factory(service)
    conn = connect(address)
    got = threading.Event()
    failures = []

    def errback(failure):
        failures.append(failure)
        got.set()

    conn.root.callRemote("wait_gate", "never").addErrback(errback)
    assert service.entered.wait(WAIT)
    server.stop(timeout=0.2)
    # nobody waits on the Deferred: the background reader sees the loss
    assert got.wait(WAIT)
    assert failures[0].check(syncpb.ConnectionLost) is syncpb.ConnectionLost


def test_client_close_fails_pending_calls(conn, service):
    d = conn.root.callRemote("wait_gate", "never")
    assert service.entered.wait(WAIT)
    notified = []
    conn.notifyOnDisconnect(lambda: notified.append("a"))
    removed = lambda: notified.append("removed")  # noqa: E731
    conn.notifyOnDisconnect(removed)
    conn.dontNotifyOnDisconnect(removed)
    conn.close()
    assert conn.closed
    with pytest.raises(syncpb.ConnectionLost):
        d.result(timeout=WAIT)
    assert notified == ["a"]
    with pytest.raises(syncpb.DeadReferenceError):
        conn.root.callRemote("echo", 1)
    conn.close()  # closing twice is harmless
    assert notified == ["a"]
