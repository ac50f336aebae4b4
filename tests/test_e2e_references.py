"""End to end: objects passed by reference, in both directions.

The server root is a :class:`syncpb.Root` whose ``rootObject(broker)`` gives
every connection its own :class:`PerConnection` root. That root keeps its
connection's broker, so ``exportCount()`` reports the server-side export
table of the caller's own connection (the root not included).

Reference counting is checked without timing: a dropped proxy's ``decref``
goes out at the connection's next write, before the next call, so "one more
round trip" is enough for the other side to have processed it.
"""

import gc
import threading

import pytest

import syncpb

WAIT = 5.0
LIMIT_MSG = "Maximum PB reference count exceeded."


class Counter(syncpb.Referenceable):
    def __init__(self, start=0):
        self.value = start

    def remote_increment(self, by=1):
        self.value += by
        return self.value

    def remote_value(self):
        return self.value


class PerConnection(syncpb.Referenceable):
    """One connection's root (runs in the server's hub thread)."""

    def __init__(self, broker, shared):
        self.broker = broker
        self.shared = shared
        self.counter = Counter(100)
        self.made = []
        self.kept = []

    def remote_exportCount(self):  # noqa: N802
        return self.broker.export_count

    def remote_importCount(self):  # noqa: N802
        return self.broker.import_count

    def remote_getCounter(self):  # noqa: N802
        return self.counter

    def remote_makeCounter(self, keep=False):  # noqa: N802
        counter = Counter()
        if keep:
            self.made.append(counter)
        return counter

    def remote_makeCounters(self, n):  # noqa: N802
        return [Counter(i) for i in range(n)]

    def remote_isMine(self, ref):  # noqa: N802
        return ref is self.counter

    def remote_allMine(self, items):  # noqa: N802
        return items[0] is items[1]["c"] is items[2][0] is self.counter

    def remote_isSame(self, a, b):  # noqa: N802
        return a is b

    def remote_sharedCounter(self):  # noqa: N802
        return self.shared.counter

    def remote_keep(self, ref):
        self.kept.append(ref)
        return len(self.kept)

    def remote_keptAreEqual(self, i, j):  # noqa: N802
        a, b = self.kept[i], self.kept[j]
        return [a == b, hash(a) == hash(b), len({a: 1, b: 2})]

    def remote_callKept(self, index, method, *args):  # noqa: N802
        return self.kept[index].callRemote(method, *args).result(timeout=WAIT)

    def remote_dropKept(self):  # noqa: N802
        self.kept.clear()
        gc.collect()   # proxies only die with their last reference; make that certain
        return True

    def remote_ping(self):
        return "pong"


class Service(syncpb.Root):
    def __init__(self):
        self.counter = Counter(1000)   # one object every connection can reach
        self.roots = []

    def rootObject(self, broker):  # noqa: N802
        root = PerConnection(broker, self)
        self.roots.append(root)
        return root


class Listener(syncpb.Referenceable):
    """A client-side object the server keeps and calls later."""

    def __init__(self):
        self.messages = []

    def remote_notify(self, message):
        self.messages.append(message)
        return f"got {message}"


@pytest.fixture
def service():
    return Service()


@pytest.fixture
def address(service, server_factory):
    return server_factory(service)[1]


@pytest.fixture
def conn(address, connect):
    return connect(address)


def collect():
    """Drop unreachable proxies now (they may sit in reference cycles)."""
    gc.collect()


# ---------------------------------------------------------------- server objects


def test_server_returns_a_referenceable_the_client_can_call(conn):
    counter = conn.root.getCounter()
    assert isinstance(counter, syncpb.RemoteReference)
    assert counter.increment() == 101
    assert counter.increment(by=9) == 110
    assert counter.callRemote("value").result(timeout=WAIT) == 110
    with pytest.raises(syncpb.NoSuchMethod):
        counter.nope()
    assert conn.broker.import_count == 1


def test_each_connection_gets_its_own_root(address, connect, service):
    a, b = connect(address), connect(address)
    a.root.getCounter().increment()
    assert b.root.getCounter().value() == 100
    assert len(service.roots) == 2
    # but the object they share is the same one
    a.root.sharedCounter().increment()
    assert b.root.sharedCounter().value() == 1001


def test_passing_a_reference_back_gives_the_server_its_own_object(conn):
    counter = conn.root.getCounter()
    assert conn.root.isMine(counter) is True
    assert conn.root.isSame(counter, counter) is True
    other = conn.root.makeCounter()
    assert conn.root.isMine(other) is False
    assert conn.root.isSame(counter, other) is False
    # also from inside containers
    assert conn.root.allMine([counter, {"c": counter}, (counter,)]) is True


def test_remote_reference_equality_and_hashing(address, connect):
    conn = connect(address)
    first = conn.root.getCounter()
    second = conn.root.getCounter()
    assert first == second
    assert not (first != second)
    assert hash(first) == hash(second)
    table = {first: "counter"}
    assert table[second] == "counter"
    assert len({first, second}) == 1

    other = conn.root.makeCounter()
    assert other != first
    assert len({first, other}) == 2
    assert first != conn.root
    assert conn.root == conn.root
    assert {conn.root: 1}[conn.root] == 1
    assert first != "not a reference"

    # the same server object seen through another connection is another reference
    elsewhere = connect(address).root.sharedCounter()
    here = conn.root.sharedCounter()
    assert here != elsewhere
    assert here.value() == elsewhere.value() == 1000


def test_dropping_the_last_proxy_decrefs_on_the_server(conn):
    counter = conn.root.makeCounter()
    assert counter.increment() == 1
    assert conn.root.exportCount() == 1
    del counter
    collect()
    assert conn.root.exportCount() == 0   # the decref went out before this call
    assert conn.broker.import_count == 0


def test_an_object_received_several_times_is_released_once_dropped(conn):
    refs = [conn.root.getCounter() for _ in range(3)]
    assert refs[0] is refs[1] is refs[2]       # one live proxy per remote object
    assert conn.root.exportCount() == 1
    del refs
    collect()
    assert conn.root.exportCount() == 0
    # fetching it again after release works and gets a fresh export
    again = conn.root.getCounter()
    assert again.value() == 100
    assert conn.root.exportCount() == 1


def test_export_table_follows_many_objects(conn):
    counters = conn.root.makeCounters(20)
    assert [c.value() for c in counters] == list(range(20))
    assert conn.root.exportCount() == 20
    del counters[10:]
    collect()
    assert conn.root.exportCount() == 10
    counters.clear()
    collect()
    assert conn.root.exportCount() == 0


# ---------------------------------------------------------------- client objects


def test_client_referenceable_kept_and_called_later_then_released(conn, service):
    listener = Listener()
    assert conn.root.keep(listener) == 1
    assert conn.broker.export_count == 1
    assert conn.root.importCount() == 1
    # later, in another call, the server uses the reference it kept
    assert conn.root.callKept(0, "notify", "first") == "got first"
    assert conn.root.callKept(0, "notify", "second") == "got second"
    assert listener.messages == ["first", "second"]
    # passing the same object again does not add an export
    assert conn.root.keep(listener) == 2
    assert conn.broker.export_count == 1
    assert conn.root.keptAreEqual(0, 1) == [True, True, 1]

    assert conn.root.dropKept() is True
    assert conn.root.ping() == "pong"         # one more round trip
    assert conn.broker.export_count == 0
    assert conn.root.importCount() == 0


def test_client_passes_the_server_reference_back_inside_a_container(conn):
    listener = Listener()
    conn.root.keep([listener, {"again": listener}][0])
    assert conn.root.callKept(0, "notify", "x") == "got x"
    assert listener.messages == ["x"]


def test_reference_cannot_be_sent_over_another_connection(address, connect):
    a, b = connect(address), connect(address)
    counter = a.root.getCounter()
    d = b.root.callRemote("isMine", counter)
    with pytest.raises(TypeError):
        d.result(timeout=WAIT)
    assert b.root.ping() == "pong"
    assert a.root.isMine(counter) is True


# ---------------------------------------------------------------- limits


def test_server_max_references_gives_a_clear_error(service, server_factory, connect):
    limit = 3
    _, address = server_factory(service, limits=syncpb.Limits(max_references=limit))
    conn = connect(address)
    held = [conn.root.makeCounter(keep=True) for _ in range(limit)]
    assert conn.root.exportCount() == limit
    with pytest.raises(syncpb.Error) as info:
        conn.root.makeCounter(keep=True)
    assert LIMIT_MSG in str(info.value)
    # the connection keeps working, and so do the objects already exported
    assert not conn.closed
    assert conn.root.ping() == "pong"
    assert [c.increment() for c in held] == [1, 1, 1]
    assert conn.root.exportCount() == limit
    # releasing one makes room for another
    del held[0]
    collect()
    assert conn.root.exportCount() == limit - 1
    held.append(conn.root.makeCounter())
    assert held[-1].increment() == 1


def test_client_max_references_gives_a_clear_error(address, connect):
    limit = 2
    conn = connect(address, limits=syncpb.Limits(max_references=limit))
    listeners = [Listener() for _ in range(limit + 3)]
    for listener in listeners[:limit]:
        assert conn.root.keep(listener) >= 1
    assert conn.broker.export_count == limit
    # Like Twisted (`len(localObjects) > MAX_BROKER_REFS`, checked before adding),
    # the client side, which has no root in its table, accepts one more.
    refused = None
    for listener in listeners[limit:]:
        d = conn.root.callRemote("keep", listener)
        if d.called:                       # refused before anything was sent
            refused = d
            break
        d.result(timeout=WAIT)
    assert refused is not None
    assert conn.broker.export_count in (limit, limit + 1)
    exported = conn.broker.export_count
    with pytest.raises(syncpb.Error) as info:
        refused.result(timeout=WAIT)
    assert str(info.value) == LIMIT_MSG
    assert conn.broker.export_count == exported
    assert not conn.closed
    assert conn.root.ping() == "pong"
    assert conn.root.callKept(1, "notify", "still") == "got still"
    # once the server drops them, exporting works again
    conn.root.dropKept()
    assert conn.root.ping() == "pong"
    assert conn.broker.export_count == 0
    assert conn.root.keep(listeners[-1]) == 1


# ---------------------------------------------------------------- disconnects


def test_reference_notify_on_disconnect_when_server_stops(service, server_factory, connect):
    server, address = server_factory(service)
    conn = connect(address)
    counter = conn.root.getCounter()
    fired = threading.Event()
    seen = []

    def on_disconnect(ref):
        seen.append(ref)
        fired.set()

    never = []
    counter.notifyOnDisconnect(on_disconnect)
    conn.root.notifyOnDisconnect(never.append)
    conn.root.dontNotifyOnDisconnect(never.append)

    server.stop()
    assert fired.wait(WAIT)
    assert seen == [counter] and seen[0] is counter
    assert never == []
    assert conn.closed
    with pytest.raises(syncpb.DeadReferenceError):
        counter.callRemote("value")
    with pytest.raises(syncpb.DeadReferenceError):
        counter.value()
