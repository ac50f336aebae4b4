"""A syncpb client against the unchanged Twisted PB server.

The Twisted server (``tests/peers/twisted_server.py``) runs in a subprocess,
started once for the module (``twisted_server``); servers with other options
come from ``twisted_server_factory``. Each test opens its own connection
(``conn``), so per-connection state such as the server's ``refCount`` starts
from zero. Every wait is bounded: calls go through ``call()`` (a Deferred's
``result(timeout=WAIT)``) except where the blocking proxy style itself is
under test.

Twisted is never imported here; the expected values and the ``interop_types``
error classes come from ``syncpb_peer`` (see there why ``MyError`` is
defined exactly once per process).
"""

import gc
import math
import threading
import weakref
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import pytest

import syncpb
from syncpb import util
from syncpb_peer import (SAMPLE_NAMES, CopyableError, MyError, Point, RemoteCopyableError,
                         BIG_SIZE, RemoteCounter, RemotePoint, big_blob, make_cycle,
                         make_shared, mismatch, sample_values, sha256, structure_problem)

WAIT = 10.0  # upper bound of any single wait for an answer


def call(ref, name, *args, **kwargs):
    """Call ``name`` remotely and wait (bounded) for the answer."""
    return ref.callRemote(name, *args, **kwargs).result(timeout=WAIT)


def errback_failure(ref, name, *args):
    """Call ``name``, expecting a failure; return the Failure the errback got."""
    caught = []
    d = ref.callRemote(name, *args)
    d.addErrback(caught.append)
    result = d.result(timeout=WAIT)
    assert len(caught) == 1, f"{name} succeeded with {result!r}"
    assert result is None  # the errback handled the failure
    return caught[0]


class Stepper(syncpb.Referenceable):
    """The client-side object the Twisted server calls back."""

    def __init__(self, conn=None):
        self.conn = conn

    def remote_step(self, x):
        return x * 2

    def remote_describe(self, *args, **kw):
        return [list(args), kw]

    def remote_explode(self):
        raise ValueError("boom")

    def remote_explodePb(self):  # noqa: N802
        raise MyError("from the client")

    def remote_nested(self, x):
        # A blocking call back to the server from inside a call the server
        # made (and is still waiting for).
        return call(self.conn.root, "add", x, 1)


@pytest.fixture
def conn(twisted_server):
    connection = syncpb.connect(twisted_server, timeout=WAIT)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def root(conn):
    return conn.root


# -- connecting --------------------------------------------------------------------


@pytest.mark.parametrize("form", ["tuple", "url"])
def test_connect_and_call(twisted_server, form):
    host, port = twisted_server
    address = (host, port) if form == "tuple" else f"tcp://{host}:{port}"
    with syncpb.connect(address, timeout=WAIT) as connection:
        assert connection.broker.dialect == b"pb"
        assert connection.root.add(2, 3) == 5  # the blocking proxy style
        assert not connection.closed
    assert connection.closed


# -- values: types() and echo() ------------------------------------------------------


def test_a_heartbeat_against_twisted_keeps_a_live_connection(twisted_server):
    beats = threading.Semaphore(0)
    beat = syncpb.Heartbeat("echo", args=("beat",), interval=0.01, timeout=WAIT,
                            on_answer=lambda seconds: beats.release())
    with syncpb.connect(twisted_server, timeout=WAIT, heartbeat=beat) as connection:
        for _ in range(3):
            assert beats.acquire(timeout=WAIT)
        assert call(connection.root, "add", 1, 2) == 3


def test_a_heartbeat_against_twisted_notices_a_peer_that_stops_answering(twisted_server):
    # slowAdd answers after 30 s: to the heartbeat, a server gone silent
    beat = syncpb.Heartbeat("slowAdd", args=(1, 2, 30.0), interval=0.01, timeout=0.3)
    with syncpb.connect(twisted_server, timeout=WAIT, heartbeat=beat) as connection:
        gone = threading.Event()
        connection.notifyOnDisconnect(gone.set)
        assert gone.wait(WAIT)
        with pytest.raises(syncpb.DeadReferenceError):
            connection.root.callRemote("add", 1, 2)


@pytest.fixture(scope="module")
def server_types(twisted_server):
    with syncpb.connect(twisted_server, timeout=WAIT) as connection:
        return call(connection.root, "types")


def test_types_keys(server_types):
    assert type(server_types) is dict
    assert sorted(server_types) == sorted(SAMPLE_NAMES)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_types_value(server_types, name):
    got = server_types[name]
    expected = sample_values()[name]
    assert mismatch(expected, got) is None
    assert structure_problem(name, got) is None


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_echo_sample_value(root, name):
    value = sample_values()[name]
    got = call(root, "echo", value)
    assert mismatch(value, got) is None
    assert structure_problem(name, got) is None


@pytest.mark.parametrize("name", ["cycle", "shared"])
def test_cycle_and_shared_methods(root, name):
    got = call(root, name)
    assert mismatch({"cycle": make_cycle, "shared": make_shared}[name](), got) is None
    assert structure_problem(name, got) is None


def _tuple_cycle():
    t = ([],)
    t[0].append(t)
    return t


def _dict_cycle():
    d = {"n": 1}
    d["self"] = d
    return d


def _shared(inner, outer=list):
    return outer([inner, inner])


# Values sent by syncpb and echoed by Twisted: built fresh for every test.
SENT_VALUES = {
    "big": lambda: 2**400,
    "negbig": lambda: -(2**400),
    "largest_long": lambda: 2**448 - 1,
    "int32_max": lambda: 2**31 - 1,
    "int32_over": lambda: 2**31,
    "int32_min": lambda: -(2**31),
    "int32_under": lambda: -(2**31) - 1,
    "uint64_max": lambda: 2**64 - 1,
    "nonascii": lambda: "żółw ✓ 日本 😀",
    "str_with_nul": lambda: "a\x00b",
    "bytes_00ff": lambda: b"\x00\xff" + bytes(range(256)),
    "empty_bytes": lambda: b"",
    "vocab_str": lambda: "list",
    "vocab_bytes": lambda: b"list",
    "vocab_words": lambda: ["None", b"None", "dictionary", b"reference", "version",
                            b"message", "answer", b"decref"],
    "float_neg_zero": lambda: -0.0,
    "float_inf": lambda: float("inf"),
    "float_nan": lambda: float("nan"),
    "float_subnormal": lambda: 5e-324,
    "set": lambda: {1, "a", b"b", (1, 2), None},
    "frozenset": lambda: frozenset({1, frozenset({2, 3})}),
    "empty_containers": lambda: [set(), frozenset(), (), {}, []],
    "datetime": lambda: datetime(2024, 12, 31, 23, 59, 59, 999999),
    "datetime_min": lambda: datetime(1, 1, 1),
    "date": lambda: date(1999, 12, 31),
    "time_midnight": lambda: time(0, 0),
    "decimal": lambda: Decimal("-1.5E+3"),
    "decimal_trailing_zero": lambda: Decimal("0.10"),
    "decimal_tiny": lambda: Decimal("-0.000001"),
    "decimal_huge": lambda: Decimal("1E+100"),
    "timedelta": lambda: timedelta(days=-1, seconds=5, microseconds=7),
    "timedelta_max": lambda: timedelta(days=999999999, seconds=86399, microseconds=999999),
    "nested_tuple": lambda: (1, ("a", (b"b", ()))),
    "dict_tuple_key": lambda: {(1, 2): "x", (3, (4, 5)): "y"},
    "dict_mixed_keys": lambda: {None: 1, b"k": 2, "k": 3, 4: 4, 1.5: 5, True: 6,
                                frozenset({7}): 7},
    "cycle": make_cycle,
    "dict_cycle": _dict_cycle,
    "tuple_cycle": _tuple_cycle,
    "shared": make_shared,
    "shared_dict": lambda: _shared({"a": 1}),
    "shared_in_tuple": lambda: _shared([1], tuple),
    "shared_set": lambda: _shared({1, 2}),
    "large_str": lambda: "häßlich ✓ " * 20000,  # 260,000 bytes: several socket reads
    "large_bytes": lambda: bytes(range(256)) * 800,
    "many_items": lambda: list(range(20000)),
}

# Identity that must survive the round trip.
IDENTITY = {
    "cycle": lambda r: r[0] is r,
    "dict_cycle": lambda r: r["self"] is r,
    "tuple_cycle": lambda r: r[0][0] is r,
    "shared": lambda r: r[0] is r[1],
    "shared_dict": lambda r: r[0] is r[1],
    "shared_in_tuple": lambda r: r[0] is r[1],
    "shared_set": lambda r: r[0] is r[1],
}


@pytest.mark.parametrize("name", list(SENT_VALUES))
def test_echo_sent_value(root, name):
    value = SENT_VALUES[name]()
    got = call(root, "echo", value)
    assert mismatch(value, got) is None
    if name.startswith("decimal"):
        assert str(got) == str(value)  # exponent and trailing zeros kept
    if name == "float_nan":
        assert math.isnan(got)
    if name in IDENTITY:
        assert IDENTITY[name](got), f"identity lost in {got!r}"


def test_echo_kw_and_args(root):
    got = call(root, "echoKw", a=1, b="x")
    assert mismatch({"a": 1, "b": "x"}, got) is None
    got = call(root, "echoKw", **{"ключ": b"v", "none": None})
    assert mismatch({"ключ": b"v", "none": None}, got) is None
    got = call(root, "echoArgs", 1, "x", b"y", k=2)
    assert mismatch([[1, "x", b"y"], {"k": 2}], got) is None
    assert call(root, "echoKw") == {}
    assert call(root, "add", "a", "b") == "ab"


# -- remote exceptions ------------------------------------------------------------


def test_fail_value(root):
    with pytest.raises(syncpb.RemoteError) as info:
        call(root, "failValue")
    error = info.value
    assert error.remote_type == "builtins.ValueError"
    assert error.message == "bad value"
    assert str(error) == "builtins.ValueError: bad value"
    assert error.remote_parents[:2] == ["builtins.ValueError", "builtins.Exception"]
    assert error.remote_traceback is None  # the server hides tracebacks by default


def test_fail_value_errback(root):
    failure = errback_failure(root, "failValue")
    assert isinstance(failure, syncpb.Failure)
    assert failure.check(ValueError) is ValueError
    assert failure.check(KeyError) is None
    assert failure.check("builtins.ValueError") == "builtins.ValueError"
    assert failure.trap(KeyError, ValueError) is ValueError
    assert failure.getErrorMessage() == "bad value"
    assert isinstance(failure.value, syncpb.RemoteError)


def test_fail_pb_error_arrives_as_itself(root):
    with pytest.raises(MyError) as info:
        call(root, "failPbError")
    error = info.value
    assert type(error) is MyError
    assert isinstance(error, syncpb.Error)
    assert str(error) == "custom pb error"
    failure = errback_failure(root, "failPbError")
    assert failure.check(syncpb.Error) is syncpb.Error
    assert failure.check(MyError) is MyError
    assert failure.check(ValueError) is None
    assert failure.getErrorMessage() == "custom pb error"


def test_fail_copyable_arrives_as_the_registered_copy(root):
    with pytest.raises(RemoteCopyableError) as info:
        call(root, "failCopyable")
    assert (info.value.message, info.value.code) == ("copyable pb error", 17)
    assert str(info.value) == "copyable pb error (code 17)"
    failure = errback_failure(root, "failCopyable")
    assert failure.check(CopyableError) is CopyableError
    assert failure.check(syncpb.Error) is syncpb.Error


def test_copy_from_twisted(root):
    point = call(root, "getPoint", 3, 4)
    assert type(point) is RemotePoint
    assert vars(point) == {"x": 3, "y": 4}
    assert [p.x for p in (root.getPoint(-1, 0), root.getPoint(5, 6))] == [-1, 5]


def test_copy_to_twisted(root):
    assert call(root, "sumPoint", Point(10, 20)) == 30
    assert root.sumPoint(Point(-3, 3)) == 0


def test_cache_from_twisted_is_updated_sent_back_and_released(root):
    counter = call(root, "getCounter")
    assert type(counter) is RemoteCounter and counter.value == 0
    again = call(root, "getCounter")  # ['cached', id]: another object, same state
    assert again is not counter and again == counter
    assert call(root, "increment") == 1  # answered once our copy applied the update
    assert counter.value == again.value == 1 and counter.updates == [1]
    assert call(root, "isCounter", counter) is True  # lcache: Twisted's own object
    assert call(root, "observerCount") == 1
    del counter, again
    gc.collect()  # both occurrences decached, then Twisted sends uncache
    assert call(root, "observerCount") == 0
    fresh = call(root, "getCounter")  # a new full copy, with the current state
    assert fresh.value == 1


class Source(syncpb.Referenceable):
    """Pages the 50 MiB blob to the Twisted server's collector."""

    def remote_pages(self, collector):
        util.StringPager(collector, big_blob())


def test_paging_50_mib_from_twisted(root):
    data = util.get_all_pages(root, "download", BIG_SIZE, timeout=60)
    assert len(data) == BIG_SIZE and sha256(data) == sha256(big_blob())


def test_paging_50_mib_to_twisted(root):
    assert root.call("pull", Source(), timeout=60) == sha256(big_blob())


def test_twisted_viewable_sees_the_avatar_it_was_reached_through(root):
    alice, bob = call(root, "user", "alice"), call(root, "user", "bob")
    alice_board, bob_board = alice.board(), bob.board()
    assert alice_board == alice.board()  # one view per (avatar, object)
    assert alice_board != bob_board
    assert alice_board.whoami() == "alice" and bob_board.whoami() == "bob"
    alice_board.post("hello from alice")
    assert bob_board.mine() == [] and alice_board.mine() == ["hello from alice"]
    assert alice.name() == "alice"


def test_fail_deferred(root):
    with pytest.raises(syncpb.RemoteError) as info:
        call(root, "failDeferred")
    assert info.value.remote_type == "builtins.KeyError"
    assert info.value.message == "'missing'"  # str(KeyError('missing'))
    failure = errback_failure(root, "failDeferred")
    assert failure.check(KeyError) is KeyError
    assert failure.check(LookupError) is LookupError  # via the remote parents


def test_no_such_method(root):
    with pytest.raises(syncpb.NoSuchMethod) as info:
        call(root, "noSuchMethod")
    assert "noSuchMethod" in str(info.value)
    failure = errback_failure(root, "noSuchMethod")
    assert failure.check(syncpb.NoSuchMethod) is syncpb.NoSuchMethod
    assert failure.check(AttributeError) is AttributeError
    assert call(root, "add", 1, 1) == 2  # the connection is still fine


def test_unsafe_tracebacks(twisted_server_factory):
    address = twisted_server_factory("--unsafe-tracebacks")
    with syncpb.connect(address, timeout=WAIT) as connection:
        with pytest.raises(syncpb.RemoteError) as info:
            call(connection.root, "failValue")
        text = info.value.remote_traceback
        assert isinstance(text, str)
        assert text.startswith("Traceback (most recent call last):")
        assert "remote_failValue" in text
        assert text.rstrip().endswith("builtins.ValueError: bad value")
        failure = errback_failure(connection.root, "failValue")
        assert "Remote traceback:" in failure.getTraceback()
        assert "remote_failValue" in failure.getTraceback()

        with pytest.raises(MyError) as info:
            call(connection.root, "failPbError")
        assert "interop_types.MyError: custom pb error" in info.value.remote_traceback

        with pytest.raises(syncpb.RemoteError) as info:
            call(connection.root, "failDeferred")
        assert "builtins.KeyError: 'missing'" in info.value.remote_traceback


def test_tracebacks_hidden_by_default(root):
    for name, kind in (("failValue", syncpb.RemoteError), ("failPbError", MyError)):
        with pytest.raises(kind) as info:
            call(root, name)
        assert info.value.remote_traceback is None
    assert "Remote traceback" not in errback_failure(root, "failValue").getTraceback()


# -- the server calls back into the client ------------------------------------------


def test_call_me_back(conn, root):
    stepper = Stepper(conn)
    assert call(root, "callMeBack", stepper, 21) == 42
    got = call(root, "callMeBackKw", stepper, "describe", 1, "a", k=b"v")
    assert mismatch([[1, "a"], {"k": b"v"}], got) is None
    assert call(root, "callMeBackKw", stepper, "step", x=5) == 10
    # A callback that blocks on a call of its own to the server.
    assert call(root, "callMeBackKw", stepper, "nested", 5) == 6
    # Each callMeBack sent our Referenceable; Twisted's decref released it.
    assert call(root, "add", 0, 0) == 0
    assert conn.broker.export_count == 0


def test_call_me_back_failures(conn, root):
    """Failures of our methods travel to Twisted and back again."""
    stepper = Stepper(conn)
    with pytest.raises(syncpb.RemoteError) as info:
        call(root, "callMeBackKw", stepper, "explode")
    assert info.value.remote_type == "builtins.ValueError"
    assert info.value.message == "boom"
    with pytest.raises(MyError) as info:
        call(root, "callMeBackKw", stepper, "explodePb")
    assert str(info.value) == "from the client"
    with pytest.raises(syncpb.NoSuchMethod):
        call(root, "callMeBackKw", stepper, "noSuchMethod")
    assert call(root, "callMeBack", stepper, 1) == 2


# -- references and reference counting ------------------------------------------------


def test_get_ref_and_decref(conn, root):
    assert call(root, "refCount") == 0
    ref = call(root, "getRef")
    assert isinstance(ref, syncpb.RemoteReference)
    assert call(ref, "hello", "bob") == "hello bob"
    assert ref.hello("alice") == "hello alice"  # the blocking proxy style
    assert call(root, "refCount") == 1
    assert conn.broker.import_count == 1

    alive = weakref.ref(ref)
    del ref
    gc.collect()
    assert alive() is None
    # The decref goes out at the latest with the next call.
    assert call(root, "refCount") == 0
    assert conn.broker.import_count == 0


def test_same_ref_received_twice_needs_two_decrefs(root):
    ref = call(root, "getRef")
    # Twisted sends ['remote', id] again (its count for the object is now 2)
    # and syncpb hands out the same proxy.
    assert call(root, "echo", ref) is ref
    assert call(root, "refCount") == 1
    del ref
    gc.collect()
    assert call(root, "refCount") == 0  # both occurrences released


def test_two_refs(root):
    first, second = call(root, "getRef"), call(root, "getRef")
    assert first != second and first == first
    assert call(root, "refCount") == 2
    assert call(root, "isSame", first, first) is True
    assert call(root, "isSame", first, second) is False
    del first
    gc.collect()
    assert call(root, "refCount") == 1
    assert call(second, "hello", "x") == "hello x"
    del second
    gc.collect()
    assert call(root, "refCount") == 0


def test_is_same_server_ref_passed_back(root):
    ref = call(root, "getRef")
    assert call(root, "isSame", ref, ref) is True


def test_store_and_drop_client_ref(conn, root):
    keeper = Stepper(conn)
    assert call(root, "store", keeper) is None
    assert conn.broker.export_count == 1
    assert call(root, "callStored", "step", 5) == 10
    assert call(root, "dropStored") is True
    call(root, "add", 0, 0)  # one more round trip
    assert conn.broker.export_count == 0
    assert keeper.remote_step(1) == 2  # our object is untouched


def test_store_with_call_no_answer(conn, root):
    keeper = Stepper(conn)
    assert root.callRemoteNoAnswer("store", keeper) is None
    # Calls are handled in order: the store happened before this call.
    assert call(root, "callStored", "step", 4) == 8
    assert conn.broker.export_count == 1
    assert call(root, "dropStored") is True
    call(root, "add", 0, 0)
    assert conn.broker.export_count == 0


def test_own_object_comes_back_while_the_server_holds_it(conn, root):
    keeper = Stepper(conn)
    call(root, "store", keeper)
    assert call(root, "echo", keeper) is keeper  # ['local', id] -> our object
    assert call(root, "dropStored") is True


def test_own_object_comes_back_as_none_when_released_first(conn, root):
    """Twisted parity: Twisted's echo() releases its proxy (decref) before it
    sends the answer ``['local', id]``, so the id is gone when the answer is
    decoded. A Twisted client gets None here too."""
    assert call(root, "echo", Stepper(conn)) is None
    assert conn.broker.export_count == 0


def test_reference_of_another_connection_is_refused(twisted_server, conn, root):
    ref = call(root, "getRef")
    with syncpb.connect(twisted_server, timeout=WAIT) as other:
        with pytest.raises(TypeError):
            call(other.root, "echo", ref)
        assert call(other.root, "refCount") == 0


# -- calls in flight -------------------------------------------------------------------


def test_slow_add_does_not_block_other_calls(root):
    order = []
    slow = root.callRemote("slowAdd", 1, 2, 0.3)
    slow.addCallback(lambda r: order.append("slowAdd") or r)
    fast = [root.callRemote("add", i, i) for i in range(5)]
    for d in fast:
        d.addCallback(lambda r: order.append("add") or r)
    assert syncpb.gather([slow] + fast).result(timeout=WAIT) == [3, 0, 2, 4, 6, 8]
    assert order == ["add"] * 5 + ["slowAdd"]


def test_many_calls_in_flight(conn, root):
    deferreds = [root.callRemote("echo", (i, str(i), bytes([i % 256]))) for i in range(500)]
    deferreds += [root.callRemote("add", i, 1) for i in range(500)]
    results = syncpb.gather(deferreds).result(timeout=WAIT)
    assert results[:500] == [(i, str(i), bytes([i % 256])) for i in range(500)]
    assert results[500:] == [i + 1 for i in range(500)]
    assert conn.broker.waiting_count == 0


def test_threads_share_one_connection(conn, root):
    errors, results = [], {}

    def worker(n):
        try:
            got = [call(root, "echo", (n, i)) for i in range(25)]
            got.append(call(root, "slowAdd", n, 1, 0.05))
            results[n] = got
        except BaseException as exc:  # noqa: B902
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert results == {n: [(n, i) for i in range(25)] + [n + 1] for n in range(8)}


# -- the server goes away -------------------------------------------------------------


def test_server_exit_fails_pending_calls(twisted_server_factory):
    address = twisted_server_factory()
    connection = syncpb.connect(address, timeout=WAIT)
    try:
        lost = threading.Event()
        refs_lost = []
        connection.notifyOnDisconnect(lost.set)
        ref = call(connection.root, "getRef")
        ref.notifyOnDisconnect(refs_lost.append)
        pending = connection.root.callRemote("slowAdd", 1, 2, 60)
        address.process.stdin.close()  # the server stops its reactor
        with pytest.raises(syncpb.ConnectionLost):
            pending.result(timeout=WAIT)
        assert lost.wait(WAIT)
        assert connection.closed
        assert refs_lost == [ref]
        with pytest.raises(syncpb.DeadReferenceError):
            connection.root.callRemote("add", 1, 2)
        assert address.process.wait(timeout=WAIT) == 0
    finally:
        connection.close()


# -- a client inside gevent -------------------------------------------------------------


def run_in_gevent_thread(function, timeout):
    """Run ``function`` in a greenlet of a fresh hub in a new OS thread.

    A separate thread keeps the hub out of the test process's main thread
    (where blocking calls would otherwise wait as greenlets from then on).
    """
    box = {}

    def main():
        import gevent

        hub = gevent.get_hub()
        try:
            box["value"] = gevent.spawn(function).get(timeout=timeout)
            hub.join(timeout=WAIT)  # let the reader greenlet see the close
        except BaseException as exc:  # noqa: B902
            box["error"] = exc
        finally:
            hub.destroy(destroy_loop=True)

    thread = threading.Thread(target=main, name="gevent-client", daemon=True)
    thread.start()
    thread.join(timeout + WAIT)
    assert not thread.is_alive(), "the gevent client thread did not finish"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_gevent_client(twisted_server):
    def scenario():
        import gevent

        report = {}
        with syncpb.connect(twisted_server, timeout=WAIT) as connection:
            root = connection.root

            # A blocking call blocks only its own greenlet (if it blocked the
            # thread, slow() would hold up the whole hub: order reversed).
            order = []

            def slow():
                result = root.slowAdd(1, 2, 0.3)
                order.append("slow")
                return result

            def fast():
                result = [root.add(i, i) for i in range(20)]
                order.append("fast")
                return result

            greenlets = [gevent.spawn(slow), gevent.spawn(fast)]
            gevent.joinall(greenlets, timeout=WAIT, raise_error=True)
            report["slow"], report["fast"] = [g.value for g in greenlets]
            report["order"] = order

            report["gather"] = syncpb.gather(
                [root.callRemote("add", i, 1) for i in range(100)]
            ).result(timeout=WAIT)
            report["types"] = mismatch(sample_values(), call(root, "types"))
            report["callMeBack"] = call(root, "callMeBack", Stepper(connection), 21)
            report["nested"] = call(root, "callMeBackKw", Stepper(connection), "nested", 5)
            try:
                call(root, "failValue")
            except syncpb.RemoteError as exc:
                report["failValue"] = (exc.remote_type, exc.message)
            ref = call(root, "getRef")
            report["hello"] = call(ref, "hello", "bob")
            report["held"] = call(root, "refCount")
        return report

    report = run_in_gevent_thread(scenario, timeout=WAIT * 2)
    assert report == {
        "slow": 3,
        "fast": [2 * i for i in range(20)],
        "order": ["fast", "slow"],
        "gather": [i + 1 for i in range(100)],
        "types": None,
        "callMeBack": 42,
        "nested": 6,
        "failValue": ("builtins.ValueError", "bad value"),
        "hello": "hello bob",
        "held": 1,
    }


def test_gevent_client_decref_before_next_call(twisted_server):
    """Dropped proxies' decrefs, released in a greenlet, must go out before
    the next call, not after it (regression: fixed in cc5bbe6, "decrefs were
    written after the next call")."""

    def scenario():
        with syncpb.connect(twisted_server, timeout=WAIT) as connection:
            root = connection.root
            ref = call(root, "getRef")
            held = call(root, "refCount")
            alive = weakref.ref(ref)
            del ref
            gc.collect()
            collected = alive() is None
            # api.md: the decref goes out at the connection's next write.
            after_one_call = call(root, "refCount")
            after_two_calls = call(root, "refCount")
        return held, collected, after_one_call, after_two_calls

    held, collected, after_one_call, after_two_calls = run_in_gevent_thread(
        scenario, timeout=WAIT * 2
    )
    assert (held, collected, after_two_calls) == (1, True, 0)  # late, but not lost
    assert after_one_call == 0
