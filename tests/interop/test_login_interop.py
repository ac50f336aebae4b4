"""PB login against real Twisted, both ways (Twisted in a subprocess).

* A syncpb client logs into ``PBServerFactory(portal)`` with
  ``InMemoryUsernamePasswordDatabaseDontUse`` (tests/peers/twisted_login_server.py).
* A Twisted client (``PBClientFactory.login``) logs into a ``syncpb.Server``
  serving a ``syncpb.Portal`` (tests/peers/twisted_login_client.py).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import syncpb

from test_portal import Realm, make_portal

PEERS = Path(__file__).resolve().parents[1] / "peers"
WAIT = 10.0


class Mind(syncpb.Referenceable):
    def remote_notify(self, text):
        return f"got {text}"


@pytest.fixture
def twisted_portal(twisted_server_factory):
    host, port = twisted_server_factory(script=PEERS / "twisted_login_server.py")
    return f"tcp://{host}:{port}"


@pytest.fixture
def twisted_anonymous_portal(twisted_server_factory):
    host, port = twisted_server_factory("--anonymous", script=PEERS / "twisted_login_server.py")
    return f"tcp://{host}:{port}"


def test_syncpb_client_logs_into_twisted(twisted_portal, connect):
    conn = connect(twisted_portal)
    alice = conn.login("alice", "wonderland", mind=Mind())
    assert alice.hello("Hi") == "Hi, alice!"
    assert alice.notifyMind() == "got news for alice"  # Twisted called our mind
    assert alice.getThing().whoami() == "alice"  # Twisted's Viewable saw the avatar


def test_twisted_refuses_wrong_password_and_unknown_user_alike(twisted_portal, connect):
    conn = connect(twisted_portal)
    with pytest.raises(syncpb.UnauthorizedLogin):
        conn.login("alice", "nope")
    with pytest.raises(syncpb.UnauthorizedLogin):
        conn.login("mallory", "x")
    bob = conn.login("bob", "builder")  # the connection stays usable
    assert bob.hello("Hey") == "Hey, bob!"


def test_anonymous_login_into_twisted(twisted_portal, twisted_anonymous_portal, connect):
    with pytest.raises(syncpb.UnhandledCredentials, match="IAnonymous"):
        connect(twisted_portal).login_anonymous()
    anon = connect(twisted_anonymous_portal).login_anonymous()
    assert anon.hello("Hey") == "Hey, anonymous!"


def test_twisted_logout_runs_when_we_release_the_avatar(twisted_portal, connect):
    conn = connect(twisted_portal)
    watcher = conn.login("bob", "builder")
    alice = conn.login("alice", "wonderland")
    assert alice.hello("x") == "x, alice!"
    del alice
    import gc
    gc.collect()
    assert "alice" in watcher.logouts()  # our decref reached Twisted before this call


def test_twisted_client_logs_into_syncpb(server_factory):
    _, address = server_factory(make_portal(anonymous=True, realm=Realm()))
    host, port = address[len("tcp://"):].rsplit(":", 1)
    completed = subprocess.run(
        [sys.executable, str(PEERS / "twisted_login_client.py"), host, port],
        capture_output=True, text=True, timeout=60)
    report = json.loads(completed.stdout or "{}")
    assert "crashed" not in report, report.get("crashed")
    assert report["wrong"] == {"error": "twisted.cred.error.UnauthorizedLogin"}
    assert report["unknown"] == {"error": "twisted.cred.error.UnauthorizedLogin"}
    assert report["hello"] == "Hi, alice!"
    assert report["mind"] == "got news for alice"
    assert report["whoami"] == "alice?"  # our Viewable saw the avatar
    assert report["anonymous"] == "Hey, anonymous!"
