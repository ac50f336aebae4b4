"""Cacheable / RemoteCache: golden bytes, the sans-IO pair, real sockets, bad input.

Twisted peers (both directions) are in tests/interop/test_cache_interop.py.
"""

from __future__ import annotations

import gc
import threading

import pytest

import syncpb
from syncpb.broker import AnswerReceived, Broker, CallReceived, Limits, ProtocolViolation
from syncpb.jelly import SecurityOptions

from brokerpair import connected_pair, run_calls
from vectors import frames

REGISTRY = syncpb.UnjellyableRegistry()
WAIT = 10.0


class Counter(syncpb.Cacheable):
    """A Cacheable that tells every holder about each change."""

    def __init__(self):
        self.value = 0
        self.observers = syncpb.ObserverList()
        self.stopped = []

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.add(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.stopped.append(observer)
        self.observers.discard(observer)

    def increment(self):
        self.value += 1
        return self.observers.notify("setValue", self.value)


class RemoteCounter(syncpb.RemoteCache):
    def __init__(self):  # called with no arguments, as in Twisted
        self.updates = []

    def setCopyableState(self, state):
        self.__dict__.update(state)

    def observe_setValue(self, value):  # noqa: N802 - a PB method name
        self.value = value
        self.updates.append(value)
        return "ok"


REGISTRY.register(b"vectypes.Counter", RemoteCounter)
Counter.__module__ = "vectypes"  # the tag the golden vector uses: b'vectypes.Counter'
COPIES = SecurityOptions(registry=REGISTRY)


class Owner(syncpb.Root):
    def __init__(self):
        self.counter = Counter()

    def remote_getCounter(self):  # noqa: N802
        return self.counter

    def remote_increment(self):
        self.counter.increment()
        return self.counter.value

    def remote_isCounter(self, other):  # noqa: N802
        return other is self.counter

    def remote_twice(self):
        return [self.counter, self.counter]


# ---------------------------------------------------------------- golden vector

def test_owner_replay_matches_twisted():
    recorded = frames("f_cacheable")
    owner = Owner()
    server = Broker(root=owner)
    ours = server.data_to_send()
    theirs = b""
    for frame in recorded:
        if frame["dir"] == "s2c":
            theirs += frame["raw"]
            continue
        run_calls(server, server.receive_data(frame["raw"]))
        ours += server.data_to_send()
    assert ours == theirs
    assert server.cache_count == 0 and len(owner.counter.stopped) == 1
    assert owner.counter.stopped[0] is not None


def test_holder_replay_matches_twisted():
    recorded = frames("f_cacheable")
    s2c = [f["raw"] for f in recorded if f["dir"] == "s2c"]
    c2s = [f["raw"] for f in recorded if f["dir"] == "c2s"]
    client = Broker(is_client=True, security=COPIES.copy())
    client.receive_data(s2c[0])
    client.call(b"root", "getCounter")
    assert client.data_to_send() == b"".join(c2s[0:3])
    (answer,) = client.receive_data(s2c[1] + s2c[2])
    first = answer.value
    assert type(first) is RemoteCounter and first.value == 0
    client.call(b"root", "increment")
    assert client.data_to_send() == c2s[3]
    (update,) = client.receive_data(s2c[3])
    assert isinstance(update, CallReceived) and update.method.__name__ == "observe_setValue"
    run_calls(client, [update])
    assert client.data_to_send() == c2s[4]
    assert first.value == 1 and first.updates == [1]
    client.receive_data(s2c[4])
    client.call(b"root", "getCounter")
    assert client.data_to_send() == c2s[5]
    (again,) = client.receive_data(s2c[5])
    assert again.value is not first and again.value == first and again.value.value == 1
    client.call(b"root", "isCounter", (again.value,))
    assert client.data_to_send() == c2s[6]
    client.receive_data(s2c[6])
    del first, again, answer, update
    gc.collect()
    assert client.data_to_send() == c2s[7] + c2s[8]  # one decache per occurrence
    assert client.cache_import_count == 1  # kept until the owner says uncache
    client.receive_data(s2c[7])
    assert client.cache_import_count == 0


# ---------------------------------------------------------------- sans-IO pair

def _pair(owner=None):
    return connected_pair(owner or Owner(), client_security=COPIES.copy())


def _call(server, client, name, *args):
    client.call(b"root", name, args)
    run_calls(server, server.receive_data(client.data_to_send()))
    events = client.receive_data(server.data_to_send())
    run_calls(client, events)
    server.receive_data(client.data_to_send())  # the holder's answers to updates
    return [e for e in events if isinstance(e, AnswerReceived)][-1].value


def test_copied_once_per_connection_then_cached():
    owner = Owner()
    server, client = _pair(owner)
    first = _call(server, client, "getCounter")
    pair = _call(server, client, "twice")
    # Already cached: each occurrence is ['cached', id] (as in Twisted), so
    # each is its own object, all sharing one state.
    assert pair[0] is not pair[1] and pair[0] == pair[1] == first
    assert server.cache_count == 1 and client.cache_import_count == 1
    assert server._caches[first_cid(server)][1] == 3  # every occurrence counted


def test_first_send_shares_within_its_message():
    server, client = _pair()
    pair = _call(server, client, "twice")  # not cached yet: full form, then a dereference
    assert pair[0] is pair[1]
    assert server._caches[first_cid(server)][1] == 1


def first_cid(server):
    (cid,) = server._caches
    return cid


def test_updates_run_observe_methods_in_order():
    owner = Owner()
    server, client = _pair(owner)
    counter = _call(server, client, "getCounter")
    for expected in (1, 2, 3):
        assert _call(server, client, "increment") == expected
    assert counter.value == 3 and counter.updates == [1, 2, 3]


def test_lcache_gives_the_owner_its_object():
    server, client = _pair()
    counter = _call(server, client, "getCounter")
    assert _call(server, client, "isCounter", counter) is True


def test_dropping_every_copy_stops_observing_and_uncaches():
    owner = Owner()
    server, client = _pair(owner)
    copies = [_call(server, client, "getCounter") for _ in range(3)]
    del copies
    gc.collect()
    run_calls(server, server.receive_data(client.data_to_send()))
    client.receive_data(server.data_to_send())
    assert server.cache_count == 0 and client.cache_import_count == 0
    assert len(owner.counter.stopped) == 1 and len(owner.counter.observers) == 0
    again = _call(server, client, "getCounter")  # a later send starts over
    assert again.value == 0 and server.cache_count == 1


def test_connection_loss_stops_every_observer_on_the_owner():
    owner = Owner()
    server, client = _pair(owner)
    _call(server, client, "getCounter")
    for work in server.take_disconnect_work():
        work()
    assert len(owner.counter.stopped) == 1 and server.cache_count == 0


def test_unsendable_state_rolls_the_cache_entry_back():
    class Broken(Counter):
        def getStateToCacheAndObserveFor(self, perspective, observer):
            super().getStateToCacheAndObserveFor(perspective, observer)
            return {"value": object()}  # has no PB form

    owner = Owner()
    owner.counter = Broken()
    server, client = _pair(owner)
    client.call(b"root", "getCounter")
    run_calls(server, server.receive_data(client.data_to_send()))
    events = client.receive_data(server.data_to_send())
    assert "could not be sent" in str(events[0].error)
    assert server.cache_count == 0 and len(owner.counter.stopped) == 1


# ---------------------------------------------------------------- bad input

def _ready_holder():
    recorded = frames("f_cacheable")
    client = Broker(is_client=True, security=COPIES.copy(), limits=Limits())
    client.receive_data(recorded[0]["raw"])
    client.data_to_send()
    return client


def test_cached_reference_to_an_unknown_id_drops_the_connection():
    client = _ready_holder()
    client.call(b"root", "getCounter")
    events = client.receive_data(bytes.fromhex("03801b8701810280" "0f87" "0981"))
    assert isinstance(events[-1], ProtocolViolation)
    assert "unknown cache id 9" in str(events[-1].error)
    assert client.cache_import_count == 0


def test_uncache_of_an_unknown_id_drops_the_connection():
    client = _ready_holder()
    events = client.receive_data(bytes.fromhex("02801f870581"))
    assert isinstance(events[-1], ProtocolViolation)


def test_decache_twice_drops_the_connection_and_leaks_nothing():
    owner = Owner()
    server, client = _pair(owner)
    _call(server, client, "getCounter")
    cid = first_cid(server)
    decache = b"\x02\x80\x1e\x87" + bytes((cid, 0x81))
    run_calls(server, server.receive_data(decache))
    assert server.cache_count == 0 and len(owner.counter.stopped) == 1
    events = server.receive_data(decache)
    assert isinstance(events[-1], ProtocolViolation)
    assert "decache of unknown cache id" in str(events[-1].error)
    assert server.cache_count == 0 and server.export_count == 0


def test_update_to_a_missing_observe_method_is_answered_with_an_error():
    owner = Owner()
    server, client = _pair(owner)
    counter = _call(server, client, "getCounter")
    observer = owner.counter.observers._observers[0]
    observer.callRemote("noSuchUpdate", 1)
    events = client.receive_data(server.data_to_send())
    assert events == []  # answered at once, nothing for the holder's code
    (error,) = server.receive_data(client.data_to_send())
    assert isinstance(error.error, syncpb.NoSuchMethod)
    assert "observe_noSuchUpdate" in str(error.error)
    assert counter.value == 0 and client.cache_import_count == 1


def test_update_to_an_unknown_cache_id_is_refused():
    client = _ready_holder()
    message = bytes.fromhex("078019870181" "0781" "088273657456616c7565" "0181"
                            "02800b87018101800587")
    events = client.receive_data(message)
    assert isinstance(events[-1], ProtocolViolation)
    assert "unknown cache id 7" in str(events[-1].error)
    assert b"Invalid Cache ID" in client.data_to_send()


# ---------------------------------------------------------------- real sockets

class WaitingOwner(Owner):
    """Answers increment() once every holder has applied the update."""

    def remote_increment(self):
        sent = [d.addErrback(lambda failure: None) for d in self.counter.increment()]
        return syncpb.gather(sent).addCallback(lambda _: self.counter.value)


@pytest.fixture
def owner_address(server_factory):
    owner = WaitingOwner()
    _, address = server_factory(owner, registry=REGISTRY)
    return owner, address


def test_updates_reach_every_holder_over_tcp(owner_address, connect):
    owner, address = owner_address
    conns = [connect(address, registry=REGISTRY) for _ in range(3)]
    counters = [conn.root.getCounter() for conn in conns]
    assert [c.value for c in counters] == [0, 0, 0]
    assert conns[0].root.increment() == 1
    assert conns[1].root.increment() == 2
    # increment() answered only once every holder had answered its update:
    for counter in counters:
        assert counter.value == 2 and counter.updates == [1, 2]
    assert all(conn.root.isCounter(counter) for conn, counter in zip(conns, counters))


def _watch_stopped(counter):
    """An Event set once ``counter.stoppedObserving`` has run."""
    stopped = threading.Event()
    original = counter.stoppedObserving

    def noticed(perspective, observer):
        original(perspective, observer)
        stopped.set()

    counter.stoppedObserving = noticed
    return stopped


def test_dropping_the_copy_stops_observing_on_the_server(owner_address, connect):
    owner, address = owner_address
    conn = connect(address, registry=REGISTRY)
    counter = conn.root.getCounter()
    stopped = _watch_stopped(owner.counter)
    del counter
    gc.collect()
    conn.root.increment()  # carries the decache out
    assert stopped.wait(WAIT)
    assert len(owner.counter.observers) == 0


def test_closing_the_connection_stops_observing(owner_address, connect):
    owner, address = owner_address
    conn = connect(address, registry=REGISTRY)
    keep = conn.root.getCounter()
    stopped = _watch_stopped(owner.counter)
    conn.close()
    assert stopped.wait(WAIT)
    assert keep.value == 0


def test_caches_read_from_threads_while_updates_apply_in_order(owner_address, connect):
    owner, address = owner_address
    conn = connect(address, registry=REGISTRY)
    counter = conn.root.getCounter()
    seen = []

    def reader():  # a bounded number of reads, while the updates arrive
        last = 0
        for _ in range(20000):
            value = counter.value
            seen.append(value >= last)
            last = value

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(100):
        conn.root.increment()
    for t in threads:
        t.join(WAIT)
    assert counter.updates == list(range(1, 101))
    assert seen and all(seen)


def test_an_error_in_stopped_observing_is_logged_not_raised(caplog):
    class Grumpy(Counter):
        def getTypeToCopy(self):
            return b"vectypes.Counter"

        def stoppedObserving(self, perspective, observer):
            raise RuntimeError("grumpy")

    owner = Owner()
    owner.counter = Grumpy()
    server, client = _pair(owner)
    _call(server, client, "getCounter")
    with caplog.at_level("ERROR", logger="syncpb"):
        for work in server.take_disconnect_work():
            work()  # would raise RuntimeError without the guard
    assert "stoppedObserving" in caplog.text and server.cache_count == 0
