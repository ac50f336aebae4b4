"""Copyable / RemoteCopy: the registry, the sans-IO broker pair, and real sockets.

Golden bytes (the e_copyable and c_errors vectors) are replayed in
tests/test_replay.py; Twisted peers are in tests/interop/.
"""

from __future__ import annotations

import gc
import threading

import pytest

import syncpb
from syncpb import banana
from syncpb.broker import AnswerReceived, ErrorReceived, ProtocolViolation
from syncpb.jelly import Reader, SecurityOptions, Writer

from brokerpair import connected_pair, run_calls

REGISTRY = syncpb.default_registry.child()  # these tests never touch the global one


class Point(syncpb.Copyable):
    def __init__(self, x, y):
        self.x, self.y = x, y


class RemotePoint(syncpb.RemoteCopy):
    def __init__(self):  # never called for a copy
        raise AssertionError("a RemoteCopy is restored, not constructed")

    def norm1(self):
        return abs(self.x) + abs(self.y)


REGISTRY.register(Point, RemotePoint)


class Secret(syncpb.Copyable):
    """Shows each perspective a different state and tag."""

    def __init__(self):
        self.public, self.hidden = "visible", "for admins"

    def getStateToCopyFor(self, perspective):
        if perspective == "admin":
            return {"public": self.public, "hidden": self.hidden}
        return {"public": self.public}

    def getTypeToCopyFor(self, perspective):
        return "tests.Secret"  # a tag need not be a class name (str form)


class RemoteSecret(syncpb.RemoteCopy):
    pass


REGISTRY.register(b"tests.Secret", RemoteSecret)


class Unregistered(syncpb.Copyable):
    def __init__(self):
        self.value = 1


class CopyError(syncpb.Error, syncpb.Copyable):
    """An exception that is also a Copyable: it travels as itself."""

    def __init__(self, message, code):
        super().__init__(message, code)
        self.message, self.code = message, code

    def getStateToCopy(self):
        return {"message": self.message, "code": self.code}

    def __str__(self):
        return f"{self.message} (code {self.code})"


class RemoteCopyError(CopyError, syncpb.RemoteCopy):
    pass


REGISTRY.register(CopyError, RemoteCopyError)


class Shapes(syncpb.Root):
    def remote_point(self, x, y):
        return Point(x, y)

    def remote_twice(self):
        p = Point(1, 2)
        return [p, p, {"again": p}]

    def remote_norm(self, p):
        return p.norm1()

    def remote_secret(self):
        return Secret()

    def remote_unregistered(self):
        return Unregistered()

    def remote_fail(self):
        raise CopyError("copyable failure", 17)

    def remote_echo(self, value):
        return value


# ---------------------------------------------------------------- registry

def test_tags_from_classes_strings_and_bytes():
    registry = syncpb.UnjellyableRegistry()
    registry.register(Point, RemotePoint)
    registry.register("other.Tag", RemotePoint)
    assert Point in registry and "other.Tag" in registry and b"other.Tag" in registry
    assert registry.lookup(b"nope") is None
    with pytest.raises(TypeError):
        registry.register(b"x.Y", dict)  # not a RemoteCopy: refused at once
    with pytest.raises(TypeError):
        registry.register_factory(b"x.Y", "not callable")


def test_child_registry_falls_back_and_keeps_its_own_entries():
    parent = syncpb.UnjellyableRegistry()
    parent.register(b"a.A", RemotePoint)
    child = parent.child()
    child.register(b"b.B", RemoteSecret)
    assert child.lookup(b"a.A") == ("copy", RemotePoint)
    assert parent.lookup(b"b.B") is None
    child.unregister(b"b.B")
    assert child.lookup(b"b.B") is None


def test_module_level_functions_default_to_the_process_wide_registry():
    tag = b"tests.test_copyable.ProcessWide"
    try:
        syncpb.setUnjellyableForClass(tag, RemotePoint)
        assert syncpb.default_registry.lookup(tag) == ("copy", RemotePoint)
        assert REGISTRY.lookup(tag) == ("copy", RemotePoint)  # children see it
    finally:
        syncpb.default_registry.unregister(tag)


def test_default_copy_form_is_module_class_and_dict():
    out = Writer(_Ctx(), True).jelly(Point(3, 4))
    tag = f"{__name__}.Point".encode()
    assert banana.Decoder(vocab=True).feed(out) == [
        [tag, [b"dictionary", [[b"unicode", b"x"], 3], [[b"unicode", b"y"], 4]]]]


class _Ctx:
    """A codec context that knows Copyables (what the broker does)."""

    def jelly_object(self, obj, writer, out):
        if isinstance(obj, syncpb.Copyable):
            writer.copy_form(obj.getTypeToCopyFor(None), obj.getStateToCopyFor(None), obj, out)
            return True
        return False


def _read(data, registry=REGISTRY):
    return Reader(data, 0, SecurityOptions(registry=registry)).jelly()


def test_copy_is_built_without_its_constructor_and_keeps_sharing():
    p = Point(5, -6)
    data = Writer(_Ctx(), True).jelly([p, p])
    first, second = _read(data)
    assert type(first) is RemotePoint and first is second
    assert (first.x, first.y, first.norm1()) == (5, -6, 11)


def test_cycle_through_a_copy_resolves_to_the_copy():
    p = Point(1, 2)
    p.me = [p]
    copy = _read(Writer(_Ctx(), True).jelly(p))
    assert copy.me[0] is copy


def test_unregistered_tag_is_refused_and_never_built():
    data = Writer(_Ctx(), True).jelly(Unregistered())
    with pytest.raises(syncpb.InsecureJelly, match="not allowed"):
        _read(data, syncpb.UnjellyableRegistry())


def test_factory_gets_the_state():
    registry = syncpb.UnjellyableRegistry()
    registry.register_factory(Point, lambda state: ("built", state["x"] + state["y"]))
    assert _read(Writer(_Ctx(), True).jelly(Point(2, 3)), registry) == ("built", 5)


def test_failing_set_copyable_state_is_a_clean_jelly_error():
    class Picky(syncpb.RemoteCopy):
        def setCopyableState(self, state):
            raise RuntimeError("no thanks")

    registry = syncpb.UnjellyableRegistry()
    registry.register(Point, Picky)
    with pytest.raises(syncpb.ProtocolError, match="setCopyableState failed.*no thanks"):
        _read(Writer(_Ctx(), True).jelly(Point(1, 1)), registry)


# ---------------------------------------------------------------- sans-IO broker pair

def _pair():
    return connected_pair(Shapes(), security=SecurityOptions(registry=REGISTRY),
                          client_security=SecurityOptions(registry=REGISTRY))


def _round_trip(server, client, name, *args, perspective=None):
    client.call(b"root", name, args)
    events = server.receive_data(client.data_to_send())
    for event in events:
        event.perspective = perspective
    run_calls(server, events)
    (event,) = client.receive_data(server.data_to_send())
    return event


def test_broker_pair_copies_both_ways():
    server, client = _pair()
    answer = _round_trip(server, client, "point", 3, 4)
    assert isinstance(answer, AnswerReceived) and type(answer.value) is RemotePoint
    assert (answer.value.x, answer.value.y) == (3, 4)
    assert _round_trip(server, client, "norm", Point(-10, 20)).value == 30
    twice = _round_trip(server, client, "twice").value
    assert twice[0] is twice[1] is twice[2]["again"]
    assert server.export_count == 0 and client.import_count == 0  # copies are not tracked


def test_state_and_tag_chosen_per_perspective():
    server, client = _pair()
    plain = _round_trip(server, client, "secret").value
    admin = _round_trip(server, client, "secret", perspective="admin").value
    assert type(plain) is RemoteSecret and vars(plain) == {"public": "visible"}
    assert vars(admin) == {"public": "visible", "hidden": "for admins"}


def test_copyable_exception_arrives_as_itself():
    server, client = _pair()
    event = _round_trip(server, client, "fail")
    assert isinstance(event, ErrorReceived) and type(event.error) is RemoteCopyError
    assert (event.error.message, event.error.code) == ("copyable failure", 17)
    assert str(event.error) == "copyable failure (code 17)"


def test_unregistered_copy_in_an_answer_fails_the_call_and_the_connection():
    server, client = connected_pair(
        Shapes(), client_security=SecurityOptions(registry=syncpb.UnjellyableRegistry()))
    events = _round_trip_events(server, client, "unregistered")
    assert isinstance(events[0], ErrorReceived)
    assert isinstance(events[0].error, syncpb.InsecureJelly)
    assert isinstance(events[-1], ProtocolViolation)


def _round_trip_events(server, client, name, *args):
    client.call(b"root", name, args)
    run_calls(server, server.receive_data(client.data_to_send()))
    return client.receive_data(server.data_to_send())


def test_unregistered_copy_in_arguments_is_refused_with_insecure_jelly():
    server, client = connected_pair(
        Shapes(), security=SecurityOptions(registry=syncpb.UnjellyableRegistry()))
    events = _round_trip_events(server, client, "echo", Unregistered())
    assert isinstance(events[0], ErrorReceived)
    assert isinstance(events[0].error, syncpb.InsecureJelly)
    assert "not allowed" in str(events[0].error)
    assert server.export_count == 0


# ---------------------------------------------------------------- real sockets

@pytest.fixture
def shapes_address(server_factory):
    return server_factory(Shapes(), registry=REGISTRY)[1]


def test_copies_over_tcp_both_ways(shapes_address, connect):
    conn = connect(shapes_address, registry=REGISTRY)
    p = conn.root.point(3, 4)
    assert type(p) is RemotePoint and (p.x, p.y) == (3, 4)
    assert conn.root.norm(Point(-1, 2)) == 3
    assert conn.root.callRemote("norm", p_to_send := Point(7, 7)).result(timeout=10) == 14
    assert p_to_send.x == 7  # the original is untouched


def test_copyable_exception_over_tcp(shapes_address, connect):
    conn = connect(shapes_address, registry=REGISTRY)
    with pytest.raises(RemoteCopyError) as info:
        conn.root.fail()
    assert info.value.code == 17
    caught = []
    conn.root.callRemote("fail").addErrback(caught.append).result(timeout=10)
    (failure,) = caught
    assert failure.check(CopyError) and failure.value.message == "copyable failure"


def test_unregistered_copy_over_tcp_fails_the_call_and_only_that_connection(
        shapes_address, connect):
    bare = connect(shapes_address, registry=syncpb.UnjellyableRegistry())
    other = connect(shapes_address, registry=REGISTRY)
    with pytest.raises(syncpb.InsecureJelly):
        bare.root.unregistered()
    closed = threading.Event()
    bare.notifyOnDisconnect(closed.set)
    assert closed.wait(10)
    assert other.root.norm(Point(1, 1)) == 2


def test_copies_are_safe_to_read_from_many_threads(shapes_address, connect):
    conn = connect(shapes_address, registry=REGISTRY)
    results = []

    def worker(n):
        for i in range(50):
            p = conn.root.point(n, i)
            results.append((p.x, p.y) == (n, i) and p.norm1() == n + i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 400 and all(results)
    gc.collect()


def test_a_servers_security_options_are_shared_by_its_connections(server_factory, connect):
    """``Server(security=X)`` decodes every connection with ``X`` itself (no
    per-connection copy, which cost each idle connection about 1 KiB): a
    factory registered on ``X`` while the server runs applies at once, to
    connections already open too."""
    import types
    security = SecurityOptions(registry=syncpb.UnjellyableRegistry())
    _, address = server_factory(Shapes(), security=security)
    refused, open_before = connect(address, registry=REGISTRY), connect(address, registry=REGISTRY)
    with pytest.raises(syncpb.InsecureJelly):
        refused.root.norm(Point(-1, 2))  # no local class for the tag yet
    security.register(f"{Point.__module__}.Point".encode(),
                      lambda state: types.SimpleNamespace(
                          norm1=lambda: abs(state["x"]) + abs(state["y"])))
    assert open_before.root.norm(Point(-1, 2)) == 3
