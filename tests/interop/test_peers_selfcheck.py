"""Self-check of the Twisted interop peers: Twisted client against Twisted
server. If these fail, the peers (not syncpb) are broken."""

import signal
import socket
import textwrap
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent.parent / "peers"

EXPECTED_STEPS = ["refs", "echo", "types", "errors", "callbacks", "store", "inflight", "copy",
                  "cache", "views"]


def failures(report):
    return {name: r["detail"] for name, r in report["results"].items() if not r["ok"]}


def test_client_against_server_all_ok(twisted_server, run_twisted_client):
    report = run_twisted_client(*twisted_server)
    assert failures(report) == {}
    assert report["ok"] is True
    assert report["steps"] == EXPECTED_STEPS
    assert report["timed_out"] is False and report["error"] is None
    names = set(report["results"])
    for required in (
        "echo.cycle", "echo.shared", "echo.nonascii", "echo.echoKw", "echo.add",
        "types.big", "types.timedelta", "errors.failValue", "errors.failPbError",
        "errors.failDeferred", "errors.failCopyable", "errors.noSuchMethod",
        "callbacks.callMeBack", "refs.refCount_held", "refs.refCount_dropped",
        "store.decref_received", "inflight.order", "copy.getPoint", "copy.sumPoint", "cache.update", "cache.released",
    ):
        assert required in names


def test_second_client_on_same_server(twisted_server, run_twisted_client):
    # Each connection has its own root and export table: refCount starts at 0.
    report = run_twisted_client(*twisted_server, "--only", "refs,store")
    assert failures(report) == {}
    assert report["steps"] == ["refs", "store"]


def test_unsafe_tracebacks(twisted_server_factory, run_twisted_client):
    address = twisted_server_factory("--unsafe-tracebacks")
    report = run_twisted_client(*address, "--only", "errors", "--expect-tracebacks")
    assert failures(report) == {}
    assert "errors.unsafeTraceback" in report["results"]


def test_tracebacks_hidden_by_default(twisted_server, run_twisted_client):
    report = run_twisted_client(*twisted_server, "--only", "errors", "--expect-tracebacks")
    assert set(failures(report)) == {"errors.unsafeTraceback"}
    assert "Traceback unavailable" in report["results"]["errors.unsafeTraceback"]["detail"]


def test_server_address_and_log(twisted_server):
    host, port = twisted_server
    assert (host, port) == ("127.0.0.1", twisted_server.port)
    assert twisted_server == ("127.0.0.1", port)
    assert twisted_server.process.poll() is None
    assert "PBServerFactory starting on %d" % port in twisted_server.log()


def test_server_stops_on_stdin_eof(twisted_server_factory):
    address = twisted_server_factory()
    address.process.stdin.close()
    assert address.process.wait(timeout=10) == 0
    assert "Main loop terminated" in address.log()
    assert "Fatal Python error" not in address.log()


def test_server_stops_on_sigterm(twisted_server_factory):
    address = twisted_server_factory()
    address.process.send_signal(signal.SIGTERM)
    assert address.process.wait(timeout=10) == 0
    assert "Main loop terminated" in address.log()
    assert "Fatal Python error" not in address.log()


def test_client_safety_timeout(twisted_server, run_twisted_client):
    # slowAdd takes 0.5 s, longer than the client's safety timeout.
    report = run_twisted_client(
        *twisted_server, "--only", "inflight", "--timeout", "0.2", check=False
    )
    assert report["returncode"] == 1
    assert report["timed_out"] is True
    assert set(failures(report)) == {"inflight.timeout"}


def test_client_reports_connection_failure(run_twisted_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the client connects
    report = run_twisted_client("127.0.0.1", port, check=False)
    assert report["returncode"] == 1
    assert report["results"] == {}
    assert "connection failed" in report["error"]


SABOTAGED_SERVER = """
import sys
sys.path.insert(0, {peers!r})
import twisted_server
from twisted.internet import defer
from twisted.spread import pb
import interop_types

Root = twisted_server.ConnectionRoot

def echo(self, x):
    return list(x) if type(x) is tuple else x

def types(self):
    values = interop_types.sample_values()
    values["shared"] = [[1, 2], [1, 2]]       # equal but not shared
    return values

def refCount(self):
    return len(self.broker.localObjects)      # forgets to skip the root

def dropStored(self):
    return True                               # keeps the reference: no decref

def failPbError(self):
    raise ValueError("custom pb error")

def slowAdd(self, a, b, delay):
    return a + b                              # answers at once

def callMeBack(self, ref, *args):
    return ref.callRemote("step", *args).addCallback(lambda r: r + 1)

Root.remote_echo = echo
Root.remote_types = types
Root.remote_refCount = refCount
Root.remote_dropStored = dropStored
Root.remote_failPbError = failPbError
Root.remote_slowAdd = slowAdd
Root.remote_callMeBack = callMeBack
del Root.remote_failCopyable
sys.exit(twisted_server.main())
"""


def test_client_detects_misbehaving_server(
    tmp_path, twisted_server_factory, run_twisted_client
):
    script = tmp_path / "sabotaged_server.py"
    script.write_text(textwrap.dedent(SABOTAGED_SERVER.format(peers=str(PEERS_DIR))))
    address = twisted_server_factory(script=script)
    report = run_twisted_client(*address)
    assert report["ok"] is False
    assert set(failures(report)) == {
        "echo.tuple",
        "types.shared",
        "refs.refCount_initial",
        "refs.refCount_held",
        "refs.refCount_dropped",
        "store.decref_received",
        "errors.failPbError",
        "errors.failCopyable",
        "inflight.order",
        "callbacks.callMeBack",
    }
