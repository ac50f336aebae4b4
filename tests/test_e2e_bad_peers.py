"""End to end: hostile peers on real sockets.

Server side: a real :class:`syncpb.Server` (own thread, own gevent hub)
on 127.0.0.1 port 0; a :class:`rawpeer.RawPeer` completes the handshake by
hand and sends one bad stream from the catalogue of ``test_bad_input``. The
server must close that connection (after the error reply Twisted would
send, for the two cases that have one), log the reason at WARNING or above
on the ``syncpb`` logger, let no exception reach its hub, and keep serving
a well-behaved client connected before the attack and one connected after.

Client side: a :class:`rawpeer.HostileServer` answers a syncpb client's
call with garbage; the client's waiting call must fail with a syncpb error
(never hang, never raise something else) and the connection must close.

Nothing sleeps: every wait is a socket timeout or ``result(timeout=...)``.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, List

import gevent.hub
import pytest

import syncpb
from syncpb import banana

from rawpeer import (CHOICE_PB, OFFER, VERSION_6, Closed, HostileServer, RawPeer,
                     failure_fields, message, read_choice_and_version)
from test_bad_input import BAD_SERVER_INPUT, DEEP, FAILURE_TAG, Bad, nested, unicode

WAIT = 5.0
E = banana.encode


# ---------------------------------------------------------------- fixtures

class Calc(syncpb.Root):
    """The server root. Runs in the server's hub thread."""

    def __init__(self):
        self.outcomes: List[Any] = []
        self.settled = threading.Event()

    def remote_add(self, a, b):
        return a + b

    def remote_echo(self, *args, **kwargs):
        return None

    def remote_ask(self, ref):
        """Call back into the caller; the answer waits for the callback's answer."""
        def record(outcome):
            self.outcomes.append(outcome)
            self.settled.set()
            return outcome

        return ref.callRemote("ping").addBoth(record)


@pytest.fixture
def hub_errors(monkeypatch):
    """Errors that reached any gevent hub or escaped any thread during the test."""
    seen: List[Any] = []
    original = gevent.hub.Hub.handle_error

    def handle_error(self, context, type_, value, tb):
        if not (isinstance(type_, type) and issubclass(type_, gevent.hub.HubDestroyed)):
            seen.append(("hub", context, type_, value))
        return original(self, context, type_, value, tb)

    monkeypatch.setattr(gevent.hub.Hub, "handle_error", handle_error)
    original_hook = threading.excepthook

    def excepthook(args):
        seen.append(("thread", args.thread, args.exc_type, args.exc_value))
        original_hook(args)

    monkeypatch.setattr(threading, "excepthook", excepthook)
    return seen


@pytest.fixture
def calc():
    return Calc()


@pytest.fixture
def served(server_factory, calc):
    """``(server, address)`` of a default (strict) server."""
    return server_factory(calc)


def syncpb_warnings(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "syncpb" and r.levelno >= logging.WARNING]


def assert_clean(hub_errors, capfd) -> None:
    """No exception reached a hub or a thread's top level; nothing was printed."""
    assert hub_errors == []
    err = capfd.readouterr().err
    assert "Traceback" not in err and "failed with" not in err, err


def assert_serving(address, before) -> None:
    """The client connected before the attack and a new one both work."""
    assert not before.closed
    assert before.root.callRemote("add", 20, 22).result(timeout=WAIT) == 42
    with syncpb.connect(address, timeout=WAIT) as after:
        assert after.root.callRemote("add", 1, 2).result(timeout=WAIT) == 3
    assert before.root.callRemote("add", 1, 1).result(timeout=WAIT) == 2


def attack(address: str, case: Bad) -> List[Any]:
    """Send one bad stream; return what the server sent before closing."""
    with RawPeer(address) as peer:
        if case.handshake:
            peer.handshake()
        else:
            peer.read_offer()
        peer.send(case.data)
        return peer.read_until_closed(timeout=WAIT)


def check_reply(case: Bad, frames: List[Any]) -> None:
    if case.reply is None:
        assert frames == [], f"nothing may be sent before closing, got {frames!r}"
        return
    assert len(frames) == 1 and frames[0][:2] == [b"error", 1], frames
    fields = failure_fields(frames[0][2])
    if case.reply == "invalid-object":
        assert fields["type"] == b"twisted.spread.pb.Error"
        assert fields["value"] == "Invalid Object ID"
    else:
        assert fields["type"] == b"twisted.spread.jelly.InsecureJelly"


def _e2e_params():
    out = []
    for case in BAD_SERVER_INPUT:
        if case.limits != syncpb.Limits():
            continue  # the per-connection limits are covered below
        marks = [pytest.mark.xfail(reason=f"syncpb bug: {case.bug}", strict=True)] if case.bug else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


# ---------------------------------------------------------------- hostile clients

@pytest.mark.parametrize("case", _e2e_params())
def test_hostile_client_is_closed_and_others_keep_working(case, served, connect, caplog,
                                                          capfd, hub_errors):
    server, address = served
    before = connect(address)
    assert before.root.add(1, 2) == 3
    frames = attack(address, case)
    check_reply(case, frames)
    # the reason was logged before the socket was closed, so it is here now
    messages = syncpb_warnings(caplog)
    closing = [m for m in messages if "closing PB connection" in m]
    assert len(closing) == 1, messages
    assert re.search(case.reason, closing[0], re.IGNORECASE), closing[0]
    assert not any("internal error" in m for m in messages), messages
    assert_serving(address, before)
    assert_clean(hub_errors, capfd)


def test_caplog_sees_records_from_the_server_thread(served, caplog):
    """The check above relies on records of the hub thread reaching caplog."""
    server, address = served
    attack(address, Bad("probe", b"\xff", r"type byte"))
    threads = {r.threadName for r in caplog.records if r.name == "syncpb"}
    assert threads and threading.current_thread().name not in threads


def test_many_hostile_clients_at_once(served, connect, caplog, capfd, hub_errors):
    server, address = served
    before = connect(address)
    peers = [RawPeer(address) for _ in range(20)]
    try:
        for peer in peers:
            peer.handshake()
        bad = [c for c in BAD_SERVER_INPUT if c.handshake and not c.bug and c.limits == syncpb.Limits()]
        for i, peer in enumerate(peers):
            peer.send(bad[i % len(bad)].data)
        for peer in peers:
            peer.read_until_closed(timeout=WAIT)
    finally:
        for peer in peers:
            peer.close()
    closing = [m for m in syncpb_warnings(caplog) if "closing PB connection" in m]
    assert len(closing) == 20
    assert_serving(address, before)
    assert_clean(hub_errors, capfd)


def test_garbage_right_after_the_handshake_bytes(served, connect, caplog, capfd, hub_errors):
    """Garbage sent together with the dialect choice and version, in one write."""
    server, address = served
    before = connect(address)
    with RawPeer(address) as peer:
        peer.read_offer()
        peer.send(CHOICE_PB + VERSION_6 + bytes(range(0x88, 0x100)))
        frames = peer.read_until_closed(timeout=WAIT)
    assert frames == [[b"version", 6]]
    assert any("closing PB connection" in m for m in syncpb_warnings(caplog))
    assert_serving(address, before)
    assert_clean(hub_errors, capfd)


def test_pending_calls_of_the_hostile_connection_fail(served, calc, connect, caplog, capfd,
                                                      hub_errors):
    """The server's own call to the hostile client fails with ConnectionLost."""
    server, address = served
    before = connect(address)
    with RawPeer(address) as peer:
        peer.handshake()
        peer.send(message(1, b"root", b"ask", [b"tuple", [b"remote", 1]]))
        callback = peer.read_message()
        assert callback[:4] == [b"message", 1, 1, b"ping"], callback
        peer.send(b"\xff")  # instead of answering
        assert peer.read_until_closed(timeout=WAIT) == []
    assert calc.settled.wait(WAIT)
    (outcome,) = calc.outcomes
    assert isinstance(outcome, syncpb.Failure) and outcome.check(syncpb.ConnectionLost), outcome
    assert_serving(address, before)
    assert_clean(hub_errors, capfd)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in BAD_SERVER_INPUT if c.reply])
def test_lenient_server_replies_and_keeps_the_connection(case, server_factory, calc, connect,
                                                          caplog, capfd, hub_errors):
    server, address = server_factory(calc, limits=syncpb.Limits(close_on_violation=False))
    before = connect(address)
    with RawPeer(address) as peer:
        peer.handshake()
        peer.send(case.data)
        check_reply(case, [peer.read_message()])
        assert peer.call_and_read(b"add", 2, 3) == [b"answer", 1, 5]
        peer.send(case.data)
        check_reply(case, [peer.read_message()])
    assert any("connection kept" in m for m in syncpb_warnings(caplog))
    assert not any("closing PB connection" in m for m in syncpb_warnings(caplog))
    assert_serving(address, before)
    assert_clean(hub_errors, capfd)


def test_lenient_server_releases_the_import_of_a_refused_message(server_factory, calc, capfd,
                                                                  hub_errors):
    """['remote', 5] arrived once in a refused message: exactly one decref comes back."""
    server, address = server_factory(calc, limits=syncpb.Limits(close_on_violation=False))
    with RawPeer(address) as peer:
        peer.handshake()
        peer.send(message(1, b"root", b"echo", [b"tuple", [b"remote", 5], [b"os.system", b"x"]]))
        frames = [peer.read_message(), peer.read_message()]
        assert frames[0][:2] == [b"error", 1]
        assert frames[1] == [b"decref", 5]
        assert peer.call_and_read(b"add", 2, 3) == [b"answer", 1, 5]
        assert peer.messages == []
    assert_clean(hub_errors, capfd)


def test_non_default_limits_apply_per_server(server_factory, calc, caplog):
    """A server with a larger size limit accepts what a default one refuses."""
    big = b"x" * (banana.SIZE_LIMIT + 10)
    data = message(1, b"root", b"echo", [b"tuple", b"BIG"]).replace(
        b"\x03\x82BIG", banana.encode_prefix(len(big)) + b"\x82" + big)
    _, roomy = server_factory(calc, limits=syncpb.Limits(size_limit=2 * banana.SIZE_LIMIT))
    _, default = server_factory(calc)
    with RawPeer(roomy) as peer:
        peer.handshake()
        peer.send(data)
        assert peer.read_message() == [b"answer", 1, [b"None"]]
    with RawPeer(default) as peer:
        peer.handshake()
        peer.send(data[:100])  # the header is enough; no unread data is left behind
        assert peer.read_until_closed(timeout=WAIT) == []
    assert any("size limit" in m for m in syncpb_warnings(caplog))


def test_non_integer_request_id(served, connect, caplog, capfd, hub_errors):
    """Either echoed (as Twisted does) or a logged violation; never an internal error."""
    server, address = served
    before = connect(address)
    with RawPeer(address) as peer:
        peer.handshake()
        peer.send(message(b"x", b"root", b"add", [b"tuple", 1, 2]))
        try:
            reply = peer.read_message(timeout=WAIT)
        except Closed:
            assert any("closing PB connection" in m for m in syncpb_warnings(caplog))
        else:
            assert reply == [b"answer", b"x", 3]
    assert not any("internal error" in m for m in syncpb_warnings(caplog))
    assert_serving(address, before)
    assert_clean(hub_errors, capfd)


def test_control_large_answer_is_not_a_violation(served, connect, caplog):
    server, address = served
    conn = connect(address)
    with RawPeer(address) as peer:  # the server may also *receive* big messages
        peer.handshake()
        big = b"y" * 300_000
        peer.send(message(1, b"root", b"add", [b"tuple", big, b""]))
        assert peer.read_message() == [b"answer", 1, big]
    assert conn.root.callRemote("add", "z" * 300_000, "!").result(timeout=WAIT) == "z" * 300_000 + "!"
    assert not syncpb_warnings(caplog)


# ---------------------------------------------------------------- hostile servers

def answer_call_with(reply):
    """A hostile server script: offer, read the client's first call, send ``reply(call)``."""

    def script(stream):
        stream.send(OFFER)
        choice, version = read_choice_and_version(stream)
        assert choice == b"pb" and version == [b"version", 6]
        calls = [stream.read_message(), stream.read_message()]
        assert [c[:4] for c in calls] == [[b"message", 1, b"root", b"add"],
                                          [b"message", 2, b"root", b"add"]], calls
        stream.send(reply(calls))
        return stream.read_until_closed(timeout=WAIT)  # what the client sent before hanging up

    return script


HOSTILE_ANSWERS = [
    # (id, bytes after the client's calls, error of call 1, error of call 2, bug)
    ("garbage", lambda calls: b"\xde\xad\xbe\xef", syncpb.ConnectionLost, syncpb.ConnectionLost,
     None),
    ("ascii-garbage-over-64-bytes", lambda calls: b"HTTP/1.1 400 Bad Request\r\n" * 4,
     syncpb.ConnectionLost, syncpb.ConnectionLost, None),
    ("answer-unknown-request-id", lambda calls: E([b"answer", 77, 3]),
     syncpb.ConnectionLost, syncpb.ConnectionLost, None),
    ("error-unknown-request-id", lambda calls: E([b"error", 77, [b"None"]]),
     syncpb.ConnectionLost, syncpb.ConnectionLost, None),
    ("oversized-string-header",
     lambda calls: b"\x03\x80\x1b\x87\x01\x81" + banana.encode_prefix(banana.SIZE_LIMIT + 1) + b"\x82",
     syncpb.ConnectionLost, syncpb.ConnectionLost, None),
    ("over-long-prefix", lambda calls: b"\x03\x80\x1b\x87\x01\x81" + b"\x00" * 65 + b"\x81",
     syncpb.ConnectionLost, syncpb.ConnectionLost, None),
    ("unknown-vocabulary", lambda calls: b"\x03\x80\x1b\x87\x01\x81\x02\x80\x30\x87\x01\x81",
     syncpb.ConnectionLost, syncpb.ConnectionLost, None),
    ("unregistered-copy-tag-in-answer",
     lambda calls: E([b"answer", 1, [b"pkg.Thing", [b"dictionary"]]]),
     syncpb.InsecureJelly, syncpb.ConnectionLost, None),
    ("bad-version", lambda calls: E([b"version", 9]), syncpb.ConnectionLost,
     syncpb.ConnectionLost, None),
    ("decref-root", lambda calls: E([b"decref", b"root"]), syncpb.ConnectionLost,
     syncpb.ConnectionLost, None),
    ("message-to-unknown-object", lambda calls: E([b"message", 1, 42, b"x", 1, [b"tuple"],
                                                   [b"dictionary"]]),
     syncpb.ConnectionLost, syncpb.ConnectionLost, None),
    ("nested-answer-deeper-than-max-depth", lambda calls: E([b"answer", 1, nested(DEEP)]),
     syncpb.SyncPBError, syncpb.ConnectionLost, None),
]


UNKNOWN_OBJECT = [a[0] for a in HOSTILE_ANSWERS].index("message-to-unknown-object")


def _hostile_params():
    out = []
    for ident, reply, first, second, bug in HOSTILE_ANSWERS:
        marks = [pytest.mark.xfail(reason=f"syncpb bug: {bug}", strict=True)] if bug else []
        out.append(pytest.param(reply, first, second, id=ident, marks=marks))
    return out



def two_call_outcomes(conn):
    """Make two calls in flight; return each answer or the exception it raised."""
    calls = [conn.root.callRemote("add", 1, 2), conn.root.callRemote("add", 3, 4)]
    outcomes = []
    for d in calls:
        try:
            outcomes.append(d.result(timeout=WAIT))
        except BaseException as exc:  # the caller checks what came back
            outcomes.append(exc)
    return outcomes

@pytest.mark.parametrize("reply,first_error,second_error", _hostile_params())
def test_client_calls_fail_when_the_server_is_hostile(reply, first_error, second_error, caplog,
                                                       capfd, hub_errors):
    with HostileServer(answer_call_with(reply)) as hostile:
        conn = syncpb.connect(hostile.address, timeout=WAIT)
        try:
            outcomes = two_call_outcomes(conn)
            assert not any(isinstance(o, syncpb.CallTimeout) for o in outcomes), \
                "a call to a hostile server hung"
            assert isinstance(outcomes[0], first_error), repr(outcomes[0])
            assert isinstance(outcomes[1], second_error), repr(outcomes[1])
            assert conn.closed
            with pytest.raises(syncpb.DeadReferenceError):
                conn.root.callRemote("add", 5, 6)
        finally:
            conn.close()
        frames = hostile.join()
    if reply is HOSTILE_ANSWERS[UNKNOWN_OBJECT][1]:
        # Twisted's reply first (the client is a PB peer too), then the close
        assert len(frames) == 1 and frames[0][:2] == [b"error", 1], frames
        assert failure_fields(frames[0][2])["value"] == "Invalid Object ID"
    else:
        assert frames == []  # the client hung up without sending more
    assert any("closing PB connection" in m for m in syncpb_warnings(caplog))
    assert_clean(hub_errors, capfd)


def test_malformed_failure_from_server_fails_the_call(caplog, capfd, hub_errors):
    """A nonsense CopyableFailure state: the call fails with a syncpb error either way
    (a RemoteError built from it, or ConnectionLost if treated as a violation)."""
    def script(stream):
        stream.send(OFFER)
        read_choice_and_version(stream)
        stream.read_message()
        stream.send(E([b"error", 1, [FAILURE_TAG, [b"dictionary", [unicode(b"parents"), 5]]]]))
        stream.read_message()  # the second call
        stream.send(E([b"answer", 2, 7]))
        hostile.release.wait(3 * WAIT)

    with HostileServer(script) as hostile:
        with syncpb.connect(hostile.address, timeout=WAIT) as conn:
            with pytest.raises(syncpb.SyncPBError) as info:
                conn.root.callRemote("add", 1, 2).result(timeout=WAIT)
            assert not isinstance(info.value, syncpb.CallTimeout)
            if isinstance(info.value, syncpb.ConnectionLost):
                assert conn.closed
            else:
                assert conn.root.callRemote("add", 3, 4).result(timeout=WAIT) == 7
    assert_clean(hub_errors, capfd)


def test_client_survives_a_server_call_with_a_non_integer_request_id(caplog, capfd, hub_errors):
    """Either the odd id is echoed (both calls then succeed) or it is a violation (both
    fail with a syncpb error and the connection closes); never a raw TypeError."""
    def script(stream):
        stream.send(OFFER)
        read_choice_and_version(stream)
        stream.read_message()
        stream.read_message()
        stream.send(E([b"message", b"x", 42, b"boom", 1, [b"tuple"], [b"dictionary"]])
                    + E([b"answer", 1, 3]) + E([b"answer", 2, 7]))
        return stream.read_until_closed(timeout=WAIT)

    with HostileServer(script) as hostile:
        conn = syncpb.connect(hostile.address, timeout=WAIT)
        try:
            outcomes = two_call_outcomes(conn)
            if conn.closed:
                assert all(isinstance(o, syncpb.SyncPBError) and
                           not isinstance(o, syncpb.CallTimeout) for o in outcomes), outcomes
            else:
                assert outcomes == [3, 7]
        finally:
            conn.close()
        hostile.join()
    assert_clean(hub_errors, capfd)


def test_blocking_proxy_call_raises_instead_of_hanging(caplog, capfd, hub_errors):
    def script(stream):
        stream.send(OFFER)
        read_choice_and_version(stream)
        stream.read_message()
        stream.send(E([b"answer", 99, 1]))
        return stream.read_until_closed(timeout=WAIT)

    with HostileServer(script) as hostile:
        with syncpb.connect(hostile.address, timeout=WAIT) as conn:
            with pytest.raises(syncpb.ConnectionLost):
                conn.root.add(1, 2)
            assert conn.closed
        hostile.join()
    assert_clean(hub_errors, capfd)


def test_client_call_from_gevent_fails_when_the_server_is_hostile(capfd, hub_errors):
    """The same, called from a greenlet (a hub in the calling thread)."""
    outcome: dict = {}

    def in_hub_thread():
        hub = gevent.hub.get_hub()
        try:
            conn = syncpb.connect(hostile.address, timeout=WAIT)
            outcome["mode"] = syncpb.wait_mode()
            d = conn.root.callRemote("add", 1, 2)
            try:
                d.result(timeout=WAIT)
            except BaseException as exc:
                outcome["error"] = exc
            outcome["closed"] = conn.closed
        finally:
            hub.destroy(destroy_loop=True)

    def reply(calls):
        return b"\xff"

    def script(stream):
        stream.send(OFFER)
        read_choice_and_version(stream)
        stream.read_message()
        stream.send(reply(None))
        return stream.read_until_closed(timeout=WAIT)

    with HostileServer(script) as hostile:
        thread = threading.Thread(target=in_hub_thread)
        thread.start()
        thread.join(3 * WAIT)
        assert not thread.is_alive()
        assert hostile.join() == []
    assert outcome["mode"] == "greenlet"
    assert isinstance(outcome["error"], syncpb.ConnectionLost), outcome
    assert outcome["closed"] is True
    assert_clean(hub_errors, capfd)


@pytest.mark.parametrize("offer", [
    b"",  # a server that sends nothing at all
    b"\xff\xfe",
    E([b"json", b"xml"], vocab=False),
    E(b"pb", vocab=False),
], ids=["silent", "garbage", "no-common-dialect", "offer-not-a-list"])
def test_connect_fails_when_the_server_does_not_offer_pb(offer, capfd, hub_errors):
    def script(stream):
        if offer:
            stream.send(offer)
        hostile.release.wait(3 * WAIT)  # keep the socket open until the test is done
        return None

    with HostileServer(script) as hostile:
        with pytest.raises(syncpb.ConnectionFailed):
            syncpb.connect(hostile.address, timeout=1)
    assert_clean(hub_errors, capfd)
