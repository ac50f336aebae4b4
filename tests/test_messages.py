"""Error messages say what happened and what to do.

Each test asserts the key phrases of one message, end to end where that is
natural (a real server on 127.0.0.1 or a unix socket in the test's temp
directory), and that the class and the wire form Twisted sees stay as they
were.
"""

from __future__ import annotations

import errno
import socket
import time

import pytest

import syncpb
from syncpb import banana, errors, passwords
from syncpb.deferred import _cancelled_to_timeout, _remaining
from syncpb.failure import Failure
from syncpb.wirefailure import exception_from_state, failure_state

from test_portal import Realm, make_portal

FAST = {"n": 2 ** 10, "r": 8, "p": 1}  # cheap scrypt for tests


class Service(syncpb.Root):
    def __init__(self):
        self.held = []

    def remote_add(self, a, b):
        return a + b

    def remote_size(self, data):
        return len(data)

    def remote_big(self, size):
        return b"x" * size

    def remote_hold(self):
        d = syncpb.Deferred()
        self.held.append(d)  # never fired: the caller's timeout ends the wait
        return d


# ---------------------------------------------------------------- 1. salted logins

@pytest.fixture
def salted_address(tmp_path, server_factory):
    path = tmp_path / "passwd"
    passwords.add_user(path, "alice", "wonderland", **FAST)
    portal = syncpb.Portal(Realm(), [syncpb.FilePasswordChecker(path)])
    return server_factory(portal)[1]


def test_plain_login_to_a_salted_checker_says_to_use_salted(salted_address, connect):
    conn = connect(salted_address)
    with pytest.raises(syncpb.UnhandledCredentials) as caught:
        conn.login("alice", "wonderland")
    text = str(caught.value)
    # Twisted's words first (what a Twisted client would recognise) ...
    assert text.startswith("No checker for twisted.cred.credentials.IUsernameHashedPassword")
    # ... then what is wrong and what to call instead, as the client sees it
    assert "salted hashes" in text
    assert "conn.login(user, password, salted=True)" in text
    assert conn.login("alice", "wonderland", salted=True).hello("Hi") == "Hi, alice!"


def test_salted_login_to_a_plain_checker_says_to_drop_salted(server_factory, connect):
    _, address = server_factory(make_portal())
    with pytest.raises(syncpb.UnhandledCredentials) as caught:
        connect(address).login("alice", "wonderland", salted=True)
    text = str(caught.value)
    assert text.startswith("No checker for syncpb salted login")
    assert "without salted=True" in text


def test_refused_anonymous_login_keeps_twisteds_exact_words(server_factory, connect):
    # byte-compared with Twisted's recording in test_portal.py as well
    _, address = server_factory(make_portal())
    with pytest.raises(syncpb.UnhandledCredentials) as caught:
        connect(address).login_anonymous()
    assert str(caught.value) == "No checker for twisted.cred.credentials.IAnonymous"


# ---------------------------------------------------------------- 2. default messages

def test_a_bare_unauthorized_login_has_a_message():
    assert str(syncpb.UnauthorizedLogin()) == "login refused: unknown user or wrong password"
    assert str(syncpb.UnauthorizedLogin("custom")) == "custom"  # a given message wins


@pytest.mark.parametrize("cls", [
    syncpb.UnauthorizedLogin, syncpb.LoginFailed, syncpb.Unauthorized,
    syncpb.UnhandledCredentials, syncpb.DeadReferenceError, syncpb.ConnectionLost,
    syncpb.NoSuchMethod, syncpb.InsecureJelly, syncpb.CancelledError, syncpb.CallTimeout,
    syncpb.ListenFailed,
])
def test_errors_raised_bare_still_say_something(cls):
    assert str(cls()).strip()
    assert str(cls("")) == str(cls())  # an empty message, as Twisted peers send


def test_wrong_password_end_to_end_says_why(server_factory, connect):
    _, address = server_factory(make_portal())
    with pytest.raises(syncpb.UnauthorizedLogin) as caught:
        connect(address).login("alice", "not it")
    assert "unknown user or wrong password" in str(caught.value)


def test_the_wire_still_carries_twisteds_empty_message():
    state = failure_state(syncpb.UnauthorizedLogin())
    assert state["type"] == b"twisted.cred.error.UnauthorizedLogin"
    assert state["value"] == ""  # what Twisted's checkers send: unchanged
    received = exception_from_state({**state, "value": ""})
    assert type(received) is syncpb.UnauthorizedLogin
    assert str(received) == "login refused: unknown user or wrong password"
    assert failure_state(syncpb.UnauthorizedLogin("given"))["value"] == "given"


# ---------------------------------------------------------------- 3. dead references

@pytest.mark.parametrize("how", ["blocking", "callRemote", "call"])
def test_a_call_through_a_closed_connection_says_to_reconnect(server_factory, connect, how):
    _, address = server_factory(Service())
    conn = connect(address)
    root = conn.root
    assert root.add(1, 2) == 3
    conn.close()
    with pytest.raises(syncpb.DeadReferenceError) as caught:
        if how == "blocking":
            root.add(1, 2)
        elif how == "callRemote":
            root.callRemote("add", 1, 2).result(timeout=5)
        else:
            root.call("add", 1, 2, timeout=5)
    text = str(caught.value)
    assert "the connection this reference belongs to is closed" in text
    assert "reconnect and fetch the reference again" in text
    assert "Calling Stale Broker" in text  # Twisted's words, for those who search them
    assert errors.wire_name_of(type(caught.value)) == "twisted.spread.pb.DeadReferenceError"


# ---------------------------------------------------------------- 4. seconds

@pytest.mark.parametrize("value,text", [
    (1, "1 second"), (1.0, "1 second"), (2.5, "2.5 seconds"), (0.5, "0.5 seconds"),
    (0, "0 seconds"), (10, "10 seconds"),
])
def test_format_seconds(value, text):
    assert errors.format_seconds(value) == text


def test_timeouts_of_one_second_are_singular():
    with pytest.raises(syncpb.CallTimeout, match=r"no result within 1 second$"):
        _remaining(time.monotonic() - 1, 1.0)
    with pytest.raises(syncpb.CallTimeout, match=r"timed out after 2\.5 seconds$"):
        _cancelled_to_timeout(Failure(syncpb.CancelledError()), 2.5)


def test_a_blocking_call_timeout_names_its_duration(server_factory, connect):
    _, address = server_factory(Service())
    with pytest.raises(syncpb.CallTimeout) as caught:
        connect(address).root.call("hold", timeout=0.05)
    assert str(caught.value) == "no answer to 'hold' within 0.05 seconds"


# ---------------------------------------------------------------- 5. addresses

@pytest.mark.parametrize("address,phrases", [
    ("unix:/srv/app/x.sock",
     ["unix address 'unix:/srv/app/x.sock' needs three slashes before an absolute path: "
      "unix:///srv/app/x.sock"]),
    ("tls+unix:/srv/x.sock", ["needs three slashes", "tls+unix:///srv/x.sock"]),
    ("unix://srv/x.sock", ["needs an absolute path", "unix:///path",
                           "did you mean unix:///srv/x.sock?"]),
    ("tcp:127.0.0.1:8800", ["needs two slashes", "tcp://127.0.0.1:8800"]),
    ("127.0.0.1:8800", ["has no scheme", "did you mean tcp://127.0.0.1:8800?"]),
    ("/srv/x.sock", ["has no scheme", "did you mean unix:///srv/x.sock?"]),
    ("localhost", ["has no scheme"]),
    ("http://example.org:80", ["unknown address scheme 'http'"]),
])
def test_bad_addresses_say_what_was_meant(address, phrases):
    server = syncpb.Server(Service())
    try:
        with pytest.raises(ValueError) as caught:
            server.listen(address)
    finally:
        server.stop()
    text = str(caught.value)
    for phrase in phrases:
        assert phrase in text
    assert "needs a scheme" not in text


@pytest.mark.parametrize("address", ["localhost", "http://example.org:80", "/srv/x.sock"])
def test_scheme_errors_list_the_accepted_forms(address):
    with pytest.raises(ValueError) as caught:
        syncpb.connect(address, timeout=5)
    for form in ("tcp://host:port", "tls://host:port", "unix:///path", "tls+unix:///path"):
        assert form in str(caught.value)


# ---------------------------------------------------------------- 6. listen failures

def test_listen_failed_is_exported_and_keeps_old_handlers_working():
    assert "ListenFailed" in syncpb.__all__
    assert issubclass(syncpb.ListenFailed, syncpb.SyncPBError)
    assert issubclass(syncpb.ListenFailed, OSError)
    assert issubclass(syncpb.ListenFailed, syncpb.ConnectionFailed)  # what listen raised before


def test_a_port_in_use_says_so_and_what_to_do():
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    server = syncpb.Server(Service())
    try:
        with pytest.raises(syncpb.ListenFailed) as caught:
            server.listen(f"tcp://127.0.0.1:{port}")
    finally:
        server.stop()
        taken.close()
    exc = caught.value
    text = str(exc)
    assert text.startswith(f"cannot listen on tcp://127.0.0.1:{port}: ")
    assert "Address already in use" in text
    assert "another process" in text and "pick another port" in text
    assert exc.errno == errno.EADDRINUSE
    assert isinstance(exc.__cause__, OSError)


def test_a_live_unix_socket_says_to_stop_it_or_choose_another_path(server_factory, connect):
    _, address = server_factory(Service(), unix=True)
    other = syncpb.Server(Service())
    try:
        with pytest.raises(syncpb.ListenFailed) as caught:
            other.listen(address)
    finally:
        other.stop()
    text = str(caught.value)
    assert address in text and "a server is listening there" in text
    assert "stop it first, or choose another path" in text
    assert connect(address).root.add(1, 2) == 3  # the first server still serves


def test_a_missing_directory_says_to_create_it(tmp_path):
    server = syncpb.Server(Service())
    try:
        with pytest.raises(syncpb.ListenFailed) as caught:
            server.listen(f"unix://{tmp_path}/missing/s")
    finally:
        server.stop()
    assert f"unix://{tmp_path}/missing/s" in str(caught.value)
    assert "the directory does not exist" in str(caught.value)
    assert caught.value.errno == errno.ENOENT


def test_a_too_long_unix_path_is_a_listen_failure(tmp_path):
    server = syncpb.Server(Service())
    try:
        with pytest.raises(syncpb.ListenFailed, match="the kernel's limit is"):
            server.listen("unix:///tmp/" + "x" * 200)
    finally:
        server.stop()
    with pytest.raises(syncpb.ConnectionFailed) as caught:  # connecting: not a listen error
        syncpb.connect("unix:///tmp/" + "x" * 200, timeout=5)
    assert not isinstance(caught.value, syncpb.ListenFailed)


@pytest.mark.parametrize("code,port,phrase", [
    (errno.EACCES, 80, "port 80 is below 1024"),
    (errno.EACCES, 80, "CAP_NET_BIND_SERVICE"),
    (errno.EACCES, None, "choose a directory it can write to"),
    (errno.EADDRNOTAVAIL, 8800, "not an address of this machine"),
])
def test_other_common_bind_errors_get_a_hint(code, port, phrase):
    # the OS decides whether these happen here (root may bind port 80): built directly
    exc = syncpb.ListenFailed.from_os_error("tcp://host:80", OSError(code, "reason"), port)
    assert str(exc).startswith("cannot listen on tcp://host:80: [Errno")
    assert phrase in str(exc) and exc.errno == code


# ---------------------------------------------------------------- 7. oversized values

HINTS = ("StringPager", "get_all_pages", "Limits and bad input", "size_limit", "both sides")


def test_a_one_mebibyte_argument_says_size_limit_and_what_to_do(server_factory, connect):
    _, address = server_factory(Service())
    conn = connect(address)
    with pytest.raises(syncpb.BananaError) as caught:
        conn.root.size(b"x" * (1 << 20))
    text = str(caught.value)
    assert "1048576 bytes (1 MiB)" in text
    assert f"exceeds the size limit of {banana.SIZE_LIMIT} bytes (640 KiB, Twisted's default)" in text
    for hint in HINTS:
        assert hint in text
    assert conn.root.size(b"fine") == 4  # nothing was sent: the connection carries on


def test_the_message_names_a_connections_own_limit(server_factory, connect):
    _, address = server_factory(Service())
    conn = connect(address, limits=syncpb.Limits(size_limit=1000))
    with pytest.raises(syncpb.BananaError) as caught:
        conn.root.size(["item"] * 2000)
    text = str(caught.value)
    assert "list of 2001 items" in text and "size limit of 1000 items" in text
    assert "Twisted's default" not in text


def test_an_oversized_result_reaches_the_caller_with_the_hint(server_factory, connect):
    _, address = server_factory(Service())
    with pytest.raises(syncpb.SyncPBError) as caught:
        connect(address).root.big(1 << 20)
    text = str(caught.value)
    assert "result could not be sent" in text and "exceeds the size limit" in text
    for hint in HINTS:
        assert hint in text


def test_banana_encode_gives_the_same_hint():
    with pytest.raises(syncpb.BananaError) as caught:
        banana.encode(b"x" * (banana.SIZE_LIMIT + 1))
    assert "exceeds the size limit" in str(caught.value) and "StringPager" in str(caught.value)
