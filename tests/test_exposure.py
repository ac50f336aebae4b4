"""Exposure: a peer can run only ``remote_``/``view_``/``perspective_``/
``observe_`` methods. Names with dunders, dots or other non-identifier
characters, and prefixed attributes that are not methods, are refused with
a remote error, on every flavour, and the connection keeps working. No
pickle anywhere; only the copy registry builds classes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import syncpb
from syncpb.jelly import Reader, SecurityOptions
from syncpb.errors import InsecureJelly

from rawpeer import RawPeer, failure_fields, message  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WAIT = 10.0

BAD_NAMES = [
    "__init__", "__class__", "__dict__", "__getattribute__", "__reduce__", "_x__y",
    "echo.__class__", "a.b", "echo ", " echo", "ech-o", "ech\x00o", "1echo", "", "echo()",
    "notAMethod", "aClass", "callableObject", "remote_echo", "view_echo",
]


class Callable:
    def __call__(self, *args):
        return "called"


class Built:
    def __init__(self, *args):
        self.args = args


def prefixed_attributes(cls, prefix):
    """Give ``cls`` an echo method and prefixed attributes that are not methods."""
    # (a view_ method gets the perspective first: echo only the last argument)
    setattr(cls, prefix + "echo", lambda self, *args: list(args[-1:]))
    setattr(cls, prefix + "notAMethod", 5)
    setattr(cls, prefix + "aClass", Built)
    setattr(cls, prefix + "callableObject", Callable())
    return cls


class Child(syncpb.Referenceable):
    pass


class Board(syncpb.Viewable):
    pass


class Player(syncpb.Avatar):
    def __init__(self):
        self.board = Board()

    def perspective_board(self):
        return self.board


class Counter(syncpb.Cacheable):
    def __init__(self):
        self.observers = []

    def getStateToCacheAndObserveFor(self, perspective, observer):  # noqa: N802
        self.observers.append(observer)
        return {}


class RemoteCounter(syncpb.RemoteCache):
    def setCopyableState(self, state):  # noqa: N802
        self.__dict__.update(state)


prefixed_attributes(Child, "remote_")
prefixed_attributes(Board, "view_")
prefixed_attributes(Player, "perspective_")
prefixed_attributes(RemoteCounter, "observe_")
Counter.__module__ = "exposure"
REGISTRY = syncpb.UnjellyableRegistry()
REGISTRY.register(b"exposure.Counter", RemoteCounter)


class Service(syncpb.Root):
    def __init__(self):
        self.child = Child()
        self.counter = Counter()

    def remote_child(self):
        return self.child

    def remote_counter(self):
        return self.counter

    def remote_poke(self, name):
        """Call ``name`` on the client's copy of the counter (an observe_ update)."""
        return self.counter.observers[-1].callRemote(name, 1)


prefixed_attributes(Service, "remote_")


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):  # noqa: N802
        return Player()


def refused(call):
    """The call fails with the peer's NoSuchMethod (a remote error)."""
    with pytest.raises((syncpb.NoSuchMethod, syncpb.RemoteError, syncpb.Error)) as caught:
        call().result(timeout=WAIT)
    text = str(caught.value)
    assert "No such method" in text or "refused method name" in text, text
    return caught.value


@pytest.fixture
def service_conn(server_factory, connect):
    _, address = server_factory(Service())
    return connect(address, registry=REGISTRY)


@pytest.mark.parametrize("kwargs", [
    [b"dictionary", [1, 2]],                                 # an int as a keyword
    [b"dictionary", [[b"tuple", b"a"], 1]],                  # a tuple as a keyword
    [b"dictionary", [b"\xff", 1]],                           # bytes that are not UTF-8
    [b"dictionary", [[b"unicode", b"x"], 1], [[b"None"], 2]],  # one good, one None
], ids=["int", "tuple", "not-utf8", "none"])
def test_keyword_names_that_are_not_text_are_refused_without_a_traceback(
        server_factory, caplog, kwargs):
    """Found by benchmarks/fuzz_server.py: such a call reached the method,
    whose ``TypeError: keywords must be strings`` was logged as the method
    raising, with a traceback. It is the peer's error: answered, not logged."""
    _, address = server_factory(Service())
    with RawPeer(address) as peer:
        peer.handshake()
        peer.send(message(7, b"root", b"echo", [b"tuple", 1], kwargs))
        reply = peer.read_message()
        assert reply[:2] == [b"error", 7], reply
        assert "keyword argument names must be text" in str(failure_fields(reply[2])), reply
        assert peer.call_and_read(b"echo", 5)[:2] == [b"answer", peer.next_id]  # still served
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= 30], \
        [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_root_and_referenceable_refuse(service_conn, name):
    child = service_conn.root.child()
    for ref in (service_conn.root, child):
        refused(lambda: ref.callRemote(name, 1))
        assert ref.callRemote("echo", 1).result(timeout=WAIT) == [1]  # still served


@pytest.mark.parametrize("name", BAD_NAMES)
def test_avatar_and_viewable_refuse(server_factory, connect, name):
    portal = syncpb.Portal(Realm(), [syncpb.InMemoryPasswordChecker(alice=b"pw")])
    _, address = server_factory(portal)
    avatar = connect(address).login("alice", "pw")
    board = avatar.board()
    for ref in (avatar, board):
        refused(lambda: ref.callRemote(name, 1))
        assert ref.callRemote("echo", 1).result(timeout=WAIT) == [1]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_remote_cache_observe_methods_refuse(service_conn, name):
    copy = service_conn.root.counter()
    assert isinstance(copy, RemoteCounter)
    refused(lambda: service_conn.root.callRemote("poke", name))
    assert service_conn.root.callRemote("poke", "echo").result(timeout=WAIT) == [1]


def test_no_pickle_marshal_eval_or_exec_in_the_library():
    pattern = re.compile(r"\b(import pickle|from pickle|cPickle|import marshal|"
                         r"from marshal|__reduce__|eval\(|exec\()")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for folder in ("syncpb", "tls", "adapters")
                 for path in (ROOT / folder).rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []


@pytest.mark.parametrize("head", [b"exposure_never_imported.Thing", b"os.system",
                                  b"builtins.object", b"__builtin__.eval"])
def test_only_the_copy_registry_builds_classes(head):
    raw = b"\x02\x80" + bytes([len(head)]) + b"\x82" + head + b"\x01\x81"  # [head, 1]
    with pytest.raises(InsecureJelly):
        Reader(raw, 0, SecurityOptions(), vocab=False).jelly()
    assert "exposure_never_imported" not in sys.modules
