"""TLS and unix-socket transports against real Twisted, both ways.

Twisted runs in subprocesses (``tests/peers/twisted_transport_server.py`` and
``tests/peers/twisted_transport_client.py``) with its own TLS stack
(``listenSSL``/``connectSSL``, ``CertificateOptions``, ``optionsForClientTLS``,
``TLSMemoryBIOFactory`` over unix sockets); every certificate comes from the
session's ``tls_material`` (one CA, a server certificate for ``localhost``,
a client certificate with CN ``alice``, and certificates that must be
refused). The syncpb side (a ``syncpb.Server`` in this process, or
``syncpb.connect``) never imports Twisted.

1. A Twisted client calls a syncpb ``tls://`` listener: with and without a
   client certificate against a listener that does not ask for one or asks
   optionally (the root's ``peerIdentity()`` says which certificate syncpb
   saw), and against a listener that *requires* one, where the Twisted
   client without a valid certificate is refused (the TLS alert syncpb
   sends reaches Twisted's Broker), syncpb logs why, and the listener keeps
   serving other clients -- also while other connections stall in their
   TLS handshakes until ``handshake_timeout`` drops them. The whole
   ``twisted_client.py`` scenario, 50 MiB paged each way and messages larger
   than a TLS record run over TLS once. A Twisted client limited to TLS 1.2.
2. A syncpb client calls a Twisted TLS server: calls, a reference returned
   and called, the server calling back, errors arriving as ``RemoteError``
   (or the registered ``MyError``), the Twisted server seeing the client's
   certificate CN ``alice``; refusals on both sides (no client certificate,
   untrusted client certificate; untrusted, expired and wrong-host server
   certificates). A Twisted server limited to TLS 1.2, and a syncpb client
   in a gevent program (cooperative connect and calls from many greenlets).
3. Unix sockets: a Twisted client over ``connectUNIX`` to a syncpb
   ``unix://`` listener (mode 0600) and a syncpb client to Twisted's
   ``listenUNIX``, with the kernel's peer credentials checked against the
   subprocess's pid; plus TLS over unix sockets (``tls+unix://``) both ways.

Every wait is bounded: servers announce themselves with one ``READY`` line
(read with ``select`` and a deadline), clients run under
``subprocess.run(timeout=...)`` (which kills that one process), syncpb calls
have ``call_timeout``/``result(timeout=...)``, and log lines are awaited on a
condition with a timeout. Twisted servers are stopped by closing their stdin,
then SIGTERM, then SIGKILL, always addressed to their own PID.
"""

import json
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID

import syncpb
from syncpb.tls import client_context, server_context
from hubthread import run_in_gevent_thread
from syncpb_peer import ConnectionRoot, MyError, sample_values, mismatch
from twisted_process import TwistedServerProcess

PEERS = Path(__file__).resolve().parents[1] / "peers"
SERVER_SCRIPT = PEERS / "twisted_transport_server.py"
CLIENT_SCRIPT = PEERS / "twisted_transport_client.py"

WAIT = 10.0  # any single syncpb call or log wait
CONNECT_TIMEOUT = 10.0
CLIENT_TIMEOUT = 45.0  # a whole Twisted client run (its own safety timeout: 30 s)
STOP_TIMEOUT = 10.0

# twisted_client.py's default steps: the whole PB scenario.
FULL_STEPS = ["identity", "refs", "echo", "types", "errors", "callbacks", "store", "inflight",
              "copy", "cache", "views"]
SHORT_STEPS = ["identity", "refs", "errors", "callbacks"]


def common_name(certificate):
    """The CN of a cryptography certificate."""
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


# -- Twisted servers (subprocesses) ---------------------------------------------------


class TwistedTransportServer(TwistedServerProcess):
    """One ``twisted_transport_server.py`` subprocess.

    Attributes:
        kind: ``"tcp"`` or ``"unix"``, from its READY line.
        port: the TCP port (``kind == "tcp"``).
        path: the unix socket path (``kind == "unix"``).
        process: the ``subprocess.Popen``.
    """

    def __init__(self, *args):
        self.port = self.path = None
        super().__init__(*map(str, args), script=SERVER_SCRIPT)

    def _started(self, line):
        """Take ``READY tcp <port>`` / ``READY unix <path>``."""
        words = line.split(" ", 2)
        if len(words) != 3 or words[0] != "READY" or words[1] not in ("tcp", "unix"):
            self._fail(f"printed {line!r} instead of 'READY tcp|unix <where>'")
        self.kind = words[1]
        if self.kind == "tcp":
            self.port = int(words[2])
        else:
            self.path = words[2]

    def url(self, scheme, host="localhost"):
        """The address syncpb.connect() takes, e.g. ``tls://localhost:PORT``."""
        if self.kind == "tcp":
            return f"{scheme}://{host}:{self.port}"
        return f"{scheme}://{self.path}"


@pytest.fixture
def short_dir():
    """A short directory for unix sockets (paths must stay under ~107 bytes)."""
    path = tempfile.mkdtemp(prefix="pbt-")
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def twisted_transport_server():
    """``start(*args)`` -> a running TwistedTransportServer; all stopped at the end."""
    servers = []

    def start(*args):
        server = TwistedTransportServer(*args)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


def tls_server_args(material, which="server", client_cert="none"):
    certificate = getattr(material, which)
    return ["--tls", "--cert", certificate.cert_path, "--key", certificate.key_path,
            "--ca", material.ca.cert_path, "--client-cert", client_cert]


# -- Twisted clients (subprocesses) ---------------------------------------------------


def run_twisted_client(*args, timeout=CLIENT_TIMEOUT):
    """Run twisted_transport_client.py; its JSON report plus returncode/stderr."""
    argv = [sys.executable, str(CLIENT_SCRIPT), *map(str, args)]
    try:
        completed = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # subprocess.run killed the client
        pytest.fail(f"Twisted client {argv} still running after {timeout}s\n"
                    f"--- stdout ---\n{(e.stdout or b'').decode('utf-8', 'replace')}\n"
                    f"--- stderr ---\n{(e.stderr or b'').decode('utf-8', 'replace')}",
                    pytrace=False)
    stdout = completed.stdout.decode("utf-8", "replace")
    stderr = completed.stderr.decode("utf-8", "replace")
    try:
        report = json.loads(stdout)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        pytest.fail(f"Twisted client {argv} printed no JSON report (status "
                    f"{completed.returncode})\n--- stdout ---\n{stdout}\n"
                    f"--- stderr ---\n{stderr}", pytrace=False)
    report["returncode"] = completed.returncode
    report["stderr"] = stderr
    return report


def tls_client_args(material, cert="client"):
    args = ["--tls", "--ca", material.ca.cert_path, "--hostname", "localhost"]
    if cert is not None:
        certificate = getattr(material, cert)
        args += ["--cert", certificate.cert_path, "--key", certificate.key_path]
    return args


def failures(report):
    return {name: r["detail"] for name, r in report["results"].items() if not r["ok"]}


def assert_completed(report, steps):
    """The Twisted client ran ``steps`` to the end and every check passed."""
    context = f"error={report['error']!r}\n--- client stderr ---\n{report['stderr']}"
    assert report["returncode"] == 0, context
    assert report["error"] is None and report["timed_out"] is False, context
    assert report["steps"] == steps
    assert failures(report) == {}
    assert not [name for name in report["results"] if name.endswith(".crashed")]
    assert report["ok"] is True


def assert_refused(report):
    """The Twisted client could not get the root object: connection failed."""
    assert report["returncode"] == 1, report
    assert report["timed_out"] is False, report
    assert report["results"] == {} and report["steps"] == []
    assert report["error"].startswith("connection failed: "), report["error"]


# -- the syncpb server (in this process) ---------------------------------------------


class IdentityRoot(ConnectionRoot):
    """syncpb_peer's per-connection root (twisted_server.py's methods) plus
    ``peerIdentity()``: what syncpb's transport knows of the client."""

    def remote_peerIdentity(self):  # noqa: N802 - the PB method name
        info = self.broker.peer_info
        certificate, unix = info.certificate, info.unix
        return {
            "cn": None if certificate is None else certificate.common_name,
            "pid": None if unix is None else unix.pid,
            "uid": None if unix is None else unix.uid,
        }


class IdentityProvider(syncpb.Root):
    def __init__(self):
        self.roots = []

    def rootObject(self, broker):  # noqa: N802 - Twisted's name
        root = IdentityRoot(broker)
        self.roots.append(root)
        return root


class LogWatch(logging.Handler):
    """Collects the ``syncpb`` logger's records; waits for one (bounded)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self.changed = threading.Condition()

    def emit(self, record):
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def matching(self, text, level=logging.WARNING):
        return [r for r in self.records if r.levelno >= level and text in r.getMessage()]

    def wait_for(self, text, count=1, level=logging.WARNING, timeout=WAIT):
        with self.changed:
            self.changed.wait_for(lambda: len(self.matching(text, level)) >= count, timeout)
            return self.matching(text, level)


@pytest.fixture
def syncpb_log():
    watch = LogWatch()
    logger = logging.getLogger("syncpb")
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)


@pytest.fixture
def syncpb_server():
    """``start(address, server_kwargs=None, **listen_kwargs)`` -> (server,
    bound address, provider); every server stopped at the end."""
    servers = []

    def start(address, server_kwargs=None, **listen_kwargs):
        provider = IdentityProvider()
        server = syncpb.Server(provider, **(server_kwargs or {}))
        servers.append(server)
        bound = server.listen(address, **listen_kwargs)
        server.start()
        return server, bound, provider

    try:
        yield start
    finally:
        for server in servers:
            server.stop(timeout=STOP_TIMEOUT)


def tcp_args(bound):
    """``--tcp HOST PORT`` for a bound ``tls://host:port`` / ``tcp://host:port``."""
    host, _, port = bound.split("://", 1)[1].rpartition(":")
    return ["--tcp", host, port]


def unix_args(bound):
    return ["--unix", bound.split("://", 1)[1]]


@pytest.fixture
def syncpb_connect():
    """syncpb.connect with bounded connect/handshake and call timeouts;
    every connection closed at the end."""
    connections = []

    def open_connection(address, **kwargs):
        kwargs.setdefault("timeout", CONNECT_TIMEOUT)
        kwargs.setdefault("call_timeout", WAIT)
        conn = syncpb.connect(address, **kwargs)
        connections.append(conn)
        return conn

    try:
        yield open_connection
    finally:
        for conn in connections:
            conn.close()


class Stepper(syncpb.Referenceable):
    """What the Twisted server calls back (twisted_client.Stepper's twin)."""

    def remote_step(self, x):
        return x * 2

    def remote_describe(self, *args, **kw):
        return [list(args), kw]


def check_pb_over(conn):
    """Calls, a reference returned and called, a call back to us, errors, a
    message larger than a TLS record, over one syncpb connection to Twisted."""
    root = conn.root
    assert root.add(2, 3) == 5
    value = sample_values()
    assert mismatch(value, root.echo(value)) is None
    greeter = root.getRef()
    assert isinstance(greeter, syncpb.RemoteReference)
    assert greeter.hello("bob") == "hello bob"
    assert root.isSame(greeter, greeter) is True
    assert root.callMeBack(Stepper(), 21) == 42  # Twisted calls our object over the link
    with pytest.raises(syncpb.RemoteError) as info:
        root.failValue()
    assert info.value.remote_type == "builtins.ValueError"
    assert info.value.message == "bad value"
    with pytest.raises(syncpb.RemoteError) as info:
        root.callRemote("failDeferred").result(timeout=WAIT)
    assert info.value.remote_type == "builtins.KeyError"
    with pytest.raises(MyError, match="custom pb error"):
        root.failPbError()
    big = "häßlich ✓ " * 20000  # 260,000 bytes of UTF-8: many TLS records each way
    assert root.echo(big) == big
    assert root.slowAdd(1, 2, 0.05) == 3  # a Deferred answered later by Twisted
    assert not conn.closed


# == 1. Twisted client -> syncpb TLS listener =========================================


@pytest.mark.parametrize(
    "listener, client_cert, expected_cn",
    [
        ("asks", "client", "alice"),
        ("asks", None, None),
        ("does-not-ask", "client", None),  # a certificate nobody asked for is not sent
        ("does-not-ask", None, None),
    ],
    ids=["asks-with-cert", "asks-without-cert", "does-not-ask-with-cert",
         "does-not-ask-without-cert"],
)
def test_interop_twisted_tls_client_calls_syncpb_tls_listener(
        tls_material, syncpb_server, listener, client_cert, expected_cn):
    ca = tls_material.ca.cert_path if listener == "asks" else None
    tls = server_context(tls_material.server.cert_path, tls_material.server.key_path, ca=ca)
    assert tls.requests_client_cert is (listener == "asks")
    assert tls.requires_client_cert is False
    _, bound, provider = syncpb_server("tls://127.0.0.1:0", tls=tls)
    assert bound.startswith("tls://127.0.0.1:")
    # The whole scenario once, with 50 MiB paged each way and messages larger
    # than a TLS record: the TLS stream's backlog and partial reads under load.
    steps = FULL_STEPS + ["paging", "large"] if (listener, client_cert) == ("asks", "client") \
        else SHORT_STEPS

    report = run_twisted_client(*tcp_args(bound), *tls_client_args(tls_material, client_cert),
                                "--only", ",".join(steps))

    assert_completed(report, steps)
    assert report["identity"] == {"cn": expected_cn, "pid": None, "uid": None}
    assert report["tls"] == {"protocol": "TLSv1.3",
                             "server_cn": common_name(tls_material.server.certificate)}
    (root,) = provider.roots
    seen = root.broker.peer_info.certificate
    assert (None if seen is None else seen.common_name) == expected_cn


@pytest.mark.parametrize(
    "client_cert, alert, logged",
    [(None, "tlsv13 alert certificate required", "the client sent no certificate"),
     ("untrusted_client", "alert unknown ca", "issued by an unknown CA"),
     ("expired_client", "alert certificate expired", "certificate has expired")],
    ids=["no-cert", "untrusted-cert", "expired-cert"],
)
def test_interop_twisted_tls_client_refused_by_syncpb_listener_requiring_cert(
        tls_material, syncpb_server, syncpb_log, syncpb_connect, client_cert, alert, logged):
    tls = server_context(tls_material.server.cert_path, tls_material.server.key_path,
                         ca=tls_material.ca.cert_path, require_client_cert=True)
    server, bound, provider = syncpb_server("tls://127.0.0.1:0", tls=tls)

    refused = run_twisted_client(*tcp_args(bound), *tls_client_args(tls_material, client_cert),
                                 "--only", ",".join(SHORT_STEPS))

    assert_refused(refused)
    assert refused["identity"] is None
    # Twisted's connector only says the TCP connection closed; the Broker
    # above Twisted's TLS layer got the TLS alert syncpb sent, saying why.
    assert len(refused["lost_reasons"]) == 1, refused["lost_reasons"]
    assert refused["lost_reasons"][0].startswith("OpenSSL.SSL.Error")
    assert alert in refused["lost_reasons"][0]
    warnings = syncpb_log.wait_for("TLS handshake with")
    assert len(warnings) == 1, [r.getMessage() for r in syncpb_log.records]
    assert warnings[0].levelno == logging.WARNING
    assert "failed" in warnings[0].getMessage() and logged in warnings[0].getMessage()
    assert provider.roots == []  # no PB session was ever made for it

    # The listener keeps serving: a Twisted client with a valid certificate
    # and a syncpb client with one both get through.
    accepted = run_twisted_client(*tcp_args(bound), *tls_client_args(tls_material, "client"),
                                  "--only", ",".join(SHORT_STEPS))
    assert_completed(accepted, SHORT_STEPS)
    assert accepted["identity"]["cn"] == "alice"
    conn = syncpb_connect(bound.replace("127.0.0.1", "localhost"),
                          tls=client_context(ca=tls_material.ca.cert_path,
                                             cert=tls_material.client.cert_path,
                                             key=tls_material.client.key_path))
    assert conn.root.peerIdentity() == {"cn": "alice", "pid": None, "uid": None}
    assert len(syncpb_log.matching("TLS handshake with")) == 1  # nothing more went wrong
    assert server.connection_count == 1


def closed_by_peer(sock):
    """Wait (the socket's timeout) for the peer to close; True if it did."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_interop_twisted_tls_client_served_while_other_tls_handshakes_stall(
        tls_material, syncpb_server, syncpb_log):
    tls = server_context(tls_material.server.cert_path, tls_material.server.key_path,
                         ca=tls_material.ca.cert_path, require_client_cert=True)
    _, bound, _ = syncpb_server("tls://127.0.0.1:0", tls=tls,
                                server_kwargs={"handshake_timeout": 1.0})
    _, host, port = tcp_args(bound)

    with socket.create_connection((host, int(port)), timeout=WAIT) as silent, \
            socket.create_connection((host, int(port)), timeout=WAIT) as partial:
        partial.sendall(b"\x16\x03\x01\x00")  # the start of a TLS record header, no more
        # Two connections sit in their TLS handshakes; a Twisted client is
        # served all the same.
        report = run_twisted_client(*tcp_args(bound), *tls_client_args(tls_material, "client"),
                                    "--only", ",".join(SHORT_STEPS))
        assert_completed(report, SHORT_STEPS)
        assert report["identity"]["cn"] == "alice"
        # The stalled ones are dropped after handshake_timeout.
        assert closed_by_peer(silent)
        assert closed_by_peer(partial)
    warnings = syncpb_log.wait_for("no TLS handshake within", count=2)
    assert len(warnings) == 2, [r.getMessage() for r in syncpb_log.records]


def test_interop_twisted_tls12_client_calls_syncpb_listener_requiring_cert(
        tls_material, syncpb_server, syncpb_log):
    # TLS 1.2: the client's certificate is checked inside the handshake (in
    # TLS 1.3 only after the client has finished it).
    tls = server_context(tls_material.server.cert_path, tls_material.server.key_path,
                         ca=tls_material.ca.cert_path, require_client_cert=True)
    _, bound, _ = syncpb_server("tls://127.0.0.1:0", tls=tls)

    refused = run_twisted_client(*tcp_args(bound), *tls_client_args(tls_material, None),
                                 "--max-tls", "1.2", "--only", ",".join(SHORT_STEPS))
    accepted = run_twisted_client(*tcp_args(bound), *tls_client_args(tls_material, "client"),
                                  "--max-tls", "1.2", "--only", ",".join(SHORT_STEPS + ["large"]))

    assert_refused(refused)
    assert refused["lost_reasons"] == [
        "OpenSSL.SSL.Error: [('SSL routines', '', 'tls alert handshake failure')]"]
    (warning,) = syncpb_log.wait_for("TLS handshake with")
    assert "the client sent no certificate" in warning.getMessage()
    assert_completed(accepted, SHORT_STEPS + ["large"])
    assert accepted["tls"]["protocol"] == "TLSv1.2"
    assert accepted["identity"]["cn"] == "alice"


# == 2. syncpb client -> Twisted TLS server ===========================================


def alice_tls(material):
    return client_context(ca=material.ca.cert_path, cert=material.client.cert_path,
                          key=material.client.key_path)


def test_interop_syncpb_tls_client_calls_twisted_server_requiring_cert(
        tls_material, twisted_transport_server, syncpb_connect):
    server = twisted_transport_server(*tls_server_args(tls_material, client_cert="required"))

    conn = syncpb_connect(server.url("tls"), tls=alice_tls(tls_material))

    assert conn.peer_info.certificate.common_name == common_name(
        tls_material.server.certificate)  # the Twisted server's certificate, verified
    check_pb_over(conn)
    identity = conn.root.peerIdentity()
    assert identity == {"tls": True, "protocol": "TLSv1.3", "cn": "alice",
                        "transport": identity["transport"]}
    assert "PEER IDENTITY cn=alice tls=True" in server.log()


@pytest.mark.parametrize("client_cert", [None, "client"], ids=["no-cert", "alice"])
def test_interop_syncpb_tls_client_calls_twisted_server_asking_optionally(
        tls_material, twisted_transport_server, syncpb_connect, client_cert):
    server = twisted_transport_server(*tls_server_args(tls_material, client_cert="optional"))
    tls = (alice_tls(tls_material) if client_cert else
           client_context(ca=tls_material.ca.cert_path))

    conn = syncpb_connect(server.url("tls"), tls=tls)

    check_pb_over(conn)
    expected = "alice" if client_cert else None
    assert conn.root.peerIdentity()["cn"] == expected
    assert f"PEER IDENTITY cn={expected} tls=True" in server.log()


@pytest.mark.parametrize(
    "client_cert, message",
    [(None, "requires a client certificate and we have none"),
     ("untrusted_client", "refused our client certificate (OpenSSL: tlsv1 alert unknown ca)"),
     ("expired_client", "refused our client certificate (OpenSSL: tls alert certificate "
                        "expired)")],
    ids=["no-cert", "untrusted-cert", "expired-cert"],
)
def test_interop_syncpb_tls_client_refused_by_twisted_server_requiring_cert(
        tls_material, twisted_transport_server, syncpb_connect, client_cert, message):
    server = twisted_transport_server(*tls_server_args(tls_material, client_cert="required"))
    if client_cert is None:
        tls = client_context(ca=tls_material.ca.cert_path)
    else:
        certificate = getattr(tls_material, client_cert)
        tls = client_context(ca=tls_material.ca.cert_path, cert=certificate.cert_path,
                             key=certificate.key_path)

    started = time.monotonic()
    with pytest.raises(syncpb.ClientCertificateRequired, match=re.escape(message)):
        syncpb_connect(server.url("tls"), tls=tls)
    assert time.monotonic() - started < CONNECT_TIMEOUT  # refused, not timed out

    # The Twisted server is still there, and takes a client it can verify.
    conn = syncpb_connect(server.url("tls"), tls=alice_tls(tls_material))
    assert conn.root.peerIdentity()["cn"] == "alice"
    assert server.process.poll() is None


def test_interop_syncpb_tls_client_calls_twisted_tls12_server(
        tls_material, twisted_transport_server, syncpb_connect):
    server = twisted_transport_server(*tls_server_args(tls_material, client_cert="required"),
                                      "--max-tls", "1.2")

    with pytest.raises(syncpb.ClientCertificateRequired, match="we have none"):
        syncpb_connect(server.url("tls"), tls=client_context(ca=tls_material.ca.cert_path))
    conn = syncpb_connect(server.url("tls"), tls=alice_tls(tls_material))

    check_pb_over(conn)
    identity = conn.root.peerIdentity()
    assert (identity["protocol"], identity["cn"]) == ("TLSv1.2", "alice")


def test_interop_syncpb_tls_client_in_gevent_program_calls_twisted_server(
        tls_material, twisted_transport_server):
    # Inside a gevent hub syncpb connects and handshakes cooperatively and
    # only the calling greenlet waits for an answer; many greenlets share
    # the one TLS connection.
    server = twisted_transport_server(*tls_server_args(tls_material, client_cert="required"))
    big = "ü" * 300_000

    def scenario():
        import gevent

        conn = syncpb.connect(server.url("tls"), timeout=CONNECT_TIMEOUT, call_timeout=WAIT,
                              tls=alice_tls(tls_material))
        try:
            adds = [gevent.spawn(conn.root.add, i, i) for i in range(20)]
            echoes = [gevent.spawn(conn.root.echo, big) for _ in range(3)]
            slow = gevent.spawn(conn.root.slowAdd, 1, 2, 0.1)
            finished = gevent.joinall(adds + echoes + [slow], timeout=WAIT, raise_error=True)
            return (len(finished), [g.value for g in adds], [g.value == big for g in echoes],
                    slow.value, conn.root.peerIdentity()["cn"])
        finally:
            conn.close()

    finished, sums, echoed, slow, cn = run_in_gevent_thread(scenario, timeout=30)
    assert finished == 24
    assert sums == [2 * i for i in range(20)]
    assert echoed == [True, True, True]
    assert slow == 3
    assert cn == "alice"


@pytest.mark.parametrize(
    "server_cert, error",
    [("untrusted_server", "CertificateUntrusted"),
     ("expired_server", "CertificateExpired"),
     ("wrong_host_server", "HostnameMismatch")],
)
def test_interop_syncpb_tls_client_refuses_bad_twisted_server_cert(
        tls_material, twisted_transport_server, syncpb_connect, server_cert, error):
    server = twisted_transport_server(*tls_server_args(tls_material, which=server_cert))
    with pytest.raises(getattr(syncpb, error)):
        syncpb_connect(server.url("tls"), tls=alice_tls(tls_material))
    assert server.process.poll() is None


# == 3. unix sockets ==================================================================


def test_interop_twisted_unix_client_calls_syncpb_unix_listener(syncpb_server, short_dir):
    path = short_dir / "pb.sock"
    server, bound, provider = syncpb_server(f"unix://{path}")
    assert bound == f"unix://{path}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    report = run_twisted_client(*unix_args(bound), "--only", ",".join(FULL_STEPS))

    assert_completed(report, FULL_STEPS)
    assert report["tls"] is None
    # syncpb learned the Twisted client's pid and uid from the kernel.
    assert report["identity"] == {"cn": None, "pid": report["pid"], "uid": os.getuid()}
    (root,) = provider.roots
    assert root.broker.peer_info.unix.pid == report["pid"]
    server.stop(timeout=STOP_TIMEOUT)
    assert not path.exists()  # syncpb removes its own socket file


def test_interop_syncpb_unix_client_calls_twisted_unix_server(
        twisted_transport_server, syncpb_connect, short_dir):
    path = short_dir / "tw.sock"
    server = twisted_transport_server("--unix", path)
    assert server.path == str(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    conn = syncpb_connect(server.url("unix"))

    unix = conn.peer_info.unix
    assert (unix.pid, unix.uid) == (server.process.pid, os.getuid())
    check_pb_over(conn)
    identity = conn.root.peerIdentity()
    assert identity["tls"] is False and identity["cn"] is None
    assert identity["transport"] == "Server"  # twisted.internet.unix.Server


@pytest.mark.parametrize("client_cert, expected_cn", [("client", "alice"), (None, None)],
                         ids=["alice", "no-cert"])
def test_interop_twisted_tls_unix_client_calls_syncpb_tls_unix_listener(
        tls_material, syncpb_server, short_dir, client_cert, expected_cn):
    path = short_dir / "pbs.sock"
    tls = server_context(tls_material.server.cert_path, tls_material.server.key_path,
                         ca=tls_material.ca.cert_path)
    _, bound, _ = syncpb_server(f"tls+unix://{path}", tls=tls)

    report = run_twisted_client(*unix_args(bound), *tls_client_args(tls_material, client_cert),
                                "--only", ",".join(SHORT_STEPS))

    assert_completed(report, SHORT_STEPS)
    assert report["identity"] == {"cn": expected_cn, "pid": report["pid"], "uid": os.getuid()}
    assert report["tls"]["protocol"] == "TLSv1.3"


def test_interop_syncpb_tls_unix_client_calls_twisted_tls_unix_server(
        tls_material, twisted_transport_server, syncpb_connect, short_dir):
    path = short_dir / "tws.sock"
    server = twisted_transport_server("--unix", path,
                                      *tls_server_args(tls_material, client_cert="required"))
    tls = client_context(ca=tls_material.ca.cert_path, cert=tls_material.client.cert_path,
                         key=tls_material.client.key_path, server_hostname="localhost")

    conn = syncpb_connect(server.url("tls+unix"), tls=tls)

    assert conn.peer_info.unix.pid == server.process.pid
    check_pb_over(conn)
    assert conn.root.peerIdentity()["cn"] == "alice"
    assert "PEER IDENTITY cn=alice tls=True" in server.log()
