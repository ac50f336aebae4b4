"""Logins: golden login frames, the sans-IO pair, real sockets, and security.

Twisted peers: tests/interop/test_login_interop.py.
"""

from __future__ import annotations

import gc
import json
import threading

import pytest

import syncpb
from syncpb import portal as portal_module
from syncpb.broker import Broker, CallReceived
from syncpb.deferred import Deferred

from rawpeer import RawPeer, message
from test_replay import assert_same_frame, split
from vectors import VECTOR_DIR, frames

WAIT = 10.0


class Thing(syncpb.Viewable):
    def view_whoami(self, perspective, suffix):
        return perspective.name + suffix


class User(syncpb.Avatar):
    """The avatar of the recordings: perspective_hello, getThing, notifyMind."""

    def __init__(self, name, mind, thing):
        self.name, self.mind, self.thing = name, mind, thing

    def perspective_hello(self, text):
        return f"{text}, {self.name}!"

    def perspective_getThing(self):  # noqa: N802 - the PB method name
        return self.thing

    def perspective_notifyMind(self):  # noqa: N802
        return self.mind.callRemote("notify", f"news for {self.name}")


class Realm:
    def __init__(self):
        self.thing = Thing()
        self.avatars = []
        self.logouts = []
        self.changed = threading.Condition()

    def _logout(self, name):
        with self.changed:
            self.logouts.append(name)
            self.changed.notify_all()

    def wait_for_logouts(self, count):
        with self.changed:
            return self.changed.wait_for(lambda: len(self.logouts) >= count, timeout=WAIT)

    def requestAvatar(self, avatar_id, mind, *interfaces):  # noqa: N802 - Twisted's name
        assert interfaces == (syncpb.IPerspective,)
        name = "anonymous" if avatar_id is None else avatar_id.decode()
        avatar = User(name, mind, self.thing)
        self.avatars.append(avatar)
        return interfaces[0], avatar, lambda: self._logout(name)


def make_portal(anonymous=False, realm=None):
    checkers = [syncpb.InMemoryPasswordChecker(alice="wonderland", bob="builder")]
    if anonymous:
        checkers.append(syncpb.AllowAnonymousAccess())
    return syncpb.Portal(realm or Realm(), checkers)


# ---------------------------------------------------------------- golden frames

def _run(broker, events):
    """Run calls; a Deferred result is answered when it fires."""
    for event in events:
        if not isinstance(event, CallReceived):
            continue
        try:
            result = event.method(*event.args, **event.kwargs)
        except Exception as exc:
            broker.fail(event.request_id, exc, event.perspective)
            continue
        if isinstance(result, Deferred):
            result.addCallbacks(
                lambda value, e=event: broker.answer(e.request_id, value, e.perspective),
                lambda failure, e=event: broker.fail(e.request_id, failure.value, e.perspective))
        else:
            broker.answer(event.request_id, result, event.perspective)


@pytest.mark.parametrize("name,anonymous,stop_at", [
    ("g_login_ok", False, b"notifyMind"),  # the mind's callback needs a session: see e2e
    ("g_login_bad_password", False, None),
    ("h_login_anonymous", True, None),
    ("h_login_anonymous_refused", False, None),
])
def test_server_login_matches_twisted(monkeypatch, name, anonymous, stop_at):
    recorded = frames(name)
    check = _login_check(name) or {"challenge_hex": "00" * 16}
    challenge = bytes.fromhex(check["challenge_hex"])
    monkeypatch.setattr(portal_module.os, "urandom", lambda n: challenge)
    server = Broker(root=make_portal(anonymous))
    ours, theirs = server.data_to_send(), b""
    for frame in recorded:
        value = frame["value"]
        if frame["dir"] == "s2c":
            if value[:1] != [b"decref"]:  # decrefs follow the peer's garbage collection
                theirs += frame["raw"]
            continue
        if stop_at is not None and value[:1] == [b"message"] and value[3] == stop_at:
            break
        _run(server, server.receive_data(frame["raw"]))
        ours += server.data_to_send()
    mine = [m for m in split(ours) if not m.startswith(b"\x02\x80\x1d\x87")]  # no decrefs
    expected = split(theirs)[: len(mine)]
    assert len(mine) == len(expected) >= 3
    for a, b in zip(mine, expected):
        assert_same_frame(a, b)


def _login_check(name):
    """The recorded (password, challenge, response) triple of a login vector."""
    with open(VECTOR_DIR / f"{name}.json") as f:
        return json.load(f).get("login_check")


def test_client_login_frames_match_twisted():
    recorded = frames("g_login_ok")
    client = Broker(is_client=True)
    client.receive_data(recorded[0]["raw"])
    client.call(b"root", "login", (b"alice",))
    assert client.data_to_send() == b"".join(f["raw"] for f in recorded[1:4])
    (answer,) = client.receive_data(recorded[4]["raw"] + recorded[5]["raw"])
    challenge, challenger = answer.value
    response = portal_module.respond(challenge, "wonderland")
    client.call(challenger.oid, "respond", (response, client_mind := syncpb.Referenceable()))
    assert client.data_to_send() == recorded[6]["raw"]
    assert client_mind is not None


def test_response_rule_matches_every_recording():
    for name in ("g_login_ok", "g_login_bad_password"):
        check = _login_check(name)
        challenge = bytes.fromhex(check["challenge_hex"])
        got = portal_module.respond(challenge, check["client_password_utf8"])
        assert got.hex() == check["response_hex"]
        credentials = syncpb.ChallengeResponse(b"alice", challenge, got)
        assert credentials.checkPassword(check["server_password_for_alice_utf8"]) is (
            name == "g_login_ok")


# ---------------------------------------------------------------- real sockets

@pytest.fixture
def served(server_factory):
    realm = Realm()
    _, address = server_factory(make_portal(anonymous=True, realm=realm))
    return realm, address


class Mind(syncpb.Referenceable):
    def remote_notify(self, text):
        return f"got {text}"


def test_login_perspective_calls_mind_and_views(served, connect):
    realm, address = served
    conn = connect(address)
    alice = conn.login("alice", "wonderland", mind=Mind())
    assert alice.hello("Hi") == "Hi, alice!"
    assert alice.notifyMind() == "got news for alice"  # the server called our mind
    assert alice.getThing().whoami("?") == "alice?"  # the Viewable sees alice


def test_wrong_password_and_unknown_user_are_the_same_error(served, connect):
    realm, address = served
    conn = connect(address)
    with pytest.raises(syncpb.UnauthorizedLogin) as wrong:
        conn.login("alice", "not it")
    with pytest.raises(syncpb.UnauthorizedLogin) as unknown:
        conn.login("mallory", "anything")
    assert str(wrong.value) == str(unknown.value)
    assert isinstance(wrong.value, syncpb.LoginFailed) and isinstance(wrong.value,
                                                                      syncpb.SyncPBError)
    alice = conn.login("alice", "wonderland")  # the connection is still usable
    assert alice.hello("again") == "again, alice!"
    assert realm.logouts == []  # refused logins never reached the realm


def test_deferred_login_forms(served, connect):
    _, address = served
    conn = connect(address)
    alice = conn.login_async("alice", "wonderland").result(timeout=WAIT)
    anon = conn.login_anonymous_async().result(timeout=WAIT)
    caught = []
    conn.login_async("alice", "nope").addErrback(caught.append).result(timeout=WAIT)
    assert alice.hello("Yo") == "Yo, alice!" and anon.hello("Hey") == "Hey, anonymous!"
    assert caught[0].check(syncpb.UnauthorizedLogin)


def test_anonymous_refused_without_an_anonymous_checker(server_factory, connect):
    _, address = server_factory(make_portal(anonymous=False))
    conn = connect(address)
    with pytest.raises(syncpb.UnhandledCredentials, match="IAnonymous"):
        conn.login_anonymous()
    assert conn.login("bob", "builder").hello("Hi") == "Hi, bob!"


def test_logout_runs_once_when_the_avatar_is_released(served, connect):
    realm, address = served
    conn = connect(address)
    alice = conn.login("alice", "wonderland")
    del alice
    gc.collect()
    conn.root.callRemote("login", b"x").result(timeout=WAIT)  # carries the decref out first
    assert realm.logouts == ["alice"]
    conn.close()
    assert realm.logouts == ["alice"]  # not again at disconnect


def test_logout_runs_once_when_the_connection_ends(served, connect):
    realm, address = served
    conn = connect(address)
    kept = [conn.login("alice", "wonderland"), conn.login_anonymous()]
    conn.close()
    assert realm.wait_for_logouts(2)
    assert sorted(realm.logouts) == ["alice", "anonymous"]
    assert kept


# ---------------------------------------------------------------- security

def test_before_login_only_the_login_methods_are_reachable(served):
    _, address = served
    with RawPeer(address).handshake() as peer:
        reply = peer.call_and_read(b"hello", b"x")
        assert reply[:2] == [b"error", 1] and b"NoSuchMethod" in repr(reply).encode()
        peer.send(message(2, 1, b"hello", [b"tuple"]))  # guess an object id
        reply = peer.read_message()
        assert reply[:2] == [b"error", 2] and b"Invalid Object ID" in repr(reply).encode()


def test_users_never_reach_each_others_avatars(served, connect):
    realm, address = served
    alice_conn, bob_conn = connect(address), connect(address)
    alice = alice_conn.login("alice", "wonderland")
    bob = bob_conn.login("bob", "builder")
    assert alice.hello("Hi") == "Hi, alice!" and bob.hello("Hi") == "Hi, bob!"
    # Bob guesses every object id his connection could hold: only his own
    # objects answer, never Alice's avatar.
    answers = set()
    for oid in range(1, 20):
        d = bob_conn._session.call_remote(oid, "hello", ("guess",), {})
        try:
            answers.add(d.result(timeout=WAIT))
        except (syncpb.Error, syncpb.NoSuchMethod, syncpb.ConnectionLost):
            break  # an unknown id closes the guessing connection
    assert "guess, alice!" not in answers
    assert alice.hello("still") == "still, alice!"


def test_failed_logins_are_logged_with_the_peer_address(served, connect, caplog):
    _, address = served
    conn = connect(address)
    with caplog.at_level("WARNING", logger="syncpb.portal"):
        with pytest.raises(syncpb.UnauthorizedLogin):
            conn.login("alice", "guess")
    (record,) = [r for r in caplog.records if "login refused" in r.getMessage()]
    assert "b'alice'" in record.getMessage() and "127.0.0.1" in record.getMessage()


def test_a_connection_that_keeps_guessing_is_closed(server_factory, connect):
    _, address = server_factory(syncpb.Portal(Realm(), [syncpb.InMemoryPasswordChecker(
        alice="wonderland")], max_failed_logins=2))
    guesser, other = connect(address), connect(address)
    for guess in ("a", "b"):
        with pytest.raises(syncpb.UnauthorizedLogin):
            guesser.login("alice", guess)
    closed = threading.Event()
    guesser.notifyOnDisconnect(closed.set)
    with pytest.raises((syncpb.ConnectionLost, syncpb.UnauthorizedLogin)):
        guesser.login("alice", "wonderland")  # even the right password: too late
    assert closed.wait(WAIT)
    assert other.login("alice", "wonderland").hello("Hi") == "Hi, alice!"


class DatabaseChecker:
    """A pluggable checker, as one for a database or LDAP would be: it knows
    passwords by some other means and answers with a Deferred."""

    credentialInterfaces = (syncpb.ChallengeResponse,)

    def __init__(self, table):
        self.table = table
        self.asked = []

    def requestAvatarId(self, credentials):  # noqa: N802 - Twisted's name
        self.asked.append(credentials.username)
        password = self.table.get(credentials.username)
        if password is not None and credentials.checkPassword(password):
            return syncpb.succeed(credentials.username)
        return syncpb.fail(syncpb.UnauthorizedLogin())


def test_a_custom_checker_returning_deferreds(server_factory, connect):
    checker = DatabaseChecker({b"carol": b"c4rol"})
    _, address = server_factory(syncpb.Portal(Realm(), [checker]))
    conn = connect(address)
    assert conn.login("carol", "c4rol").hello("Hi") == "Hi, carol!"
    with pytest.raises(syncpb.UnauthorizedLogin):
        conn.login("carol", "nope")
    assert checker.asked == [b"carol", b"carol"]
