"""The sans-IO TLS engine and its contexts, with real handshakes.

Theory: a client and a server :class:`TLSEngine` are wired together in
memory by a :class:`Link`, which moves each side's ``data_to_send()`` into
the other's ``receive()`` -- whole, or one byte at a time -- until neither
has anything left to say, and records the plaintext and the error (if any)
each side got. Every handshake is a real OpenSSL handshake; nothing is
mocked. Where syncpb itself would never be the peer (a TLS 1.1-only or a
TLS 1.2-only implementation) a :class:`RawEnd` drives a plain pyOpenSSL
connection the same way. One test runs the engines over a real 127.0.0.1
TCP connection in two threads, to show nothing depends on the pairing.

The certificates come from the session's ``tls_material`` fixture
(``tests/tlscerts.py``). Nothing sleeps: the in-memory pumps stop after
``MAX_ROUNDS`` exchanges and the socket test uses socket and join timeouts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import pytest
from OpenSSL import SSL

from syncpb.errors import (CertificateExpired, CertificateUntrusted, ClientCertificateRequired,
                           HostnameMismatch, NotTLSPeer, TLSError)
from syncpb.tls import certs
from syncpb.tls.context import ClientTLS, ServerTLS, client_context, server_context
from syncpb.tls.engine import PeerCertificate, TLSEngine

from tlscerts import SERVER_HOSTS, CertFiles, TLSMaterial

pytestmark = pytest.mark.timeout(30)

#: The first bytes a PB server sends (Banana: a list of "pb" and "none").
PB_GREETING = b"\x02\x80\x02\x82pb\x04\x82none"
MAX_ROUNDS = 200
WAIT = 5.0
VERSIONS = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}


# ---------------------------------------------------------------- pumping


class RawEnd:
    """A bare pyOpenSSL connection over memory BIOs (no syncpb policy)."""

    def __init__(self, context: SSL.Context, server_side: bool) -> None:
        """Start the connection; a client writes its ClientHello now."""
        self.connection = SSL.Connection(context, None)
        self.handshake_done = False
        if server_side:
            self.connection.set_accept_state()
        else:
            self.connection.set_connect_state()
            self._handshake()

    def _handshake(self) -> None:
        """Advance the handshake as far as the input allows."""
        try:
            self.connection.do_handshake()
            self.handshake_done = True
        except SSL.WantReadError:
            pass

    def receive(self, data: bytes) -> bytes:
        """Feed ciphertext; return the plaintext now available."""
        self.connection.bio_write(data)
        if not self.handshake_done:
            self._handshake()
        chunks = []
        while self.handshake_done:
            try:
                chunks.append(self.connection.recv(65536))
            except SSL.WantReadError:
                break
        return b"".join(chunks)

    def send(self, data: bytes) -> None:
        """Encrypt application data (only after the handshake)."""
        self.connection.sendall(data)

    def data_to_send(self) -> bytes:
        """Drain the ciphertext waiting for the network."""
        chunks = []
        while True:
            try:
                chunks.append(self.connection.bio_read(65536))
            except SSL.WantReadError:
                return b"".join(chunks)


End = Union[TLSEngine, RawEnd]


class Link:
    """Two ends wired together in memory; ``chunk`` bytes per ``receive``."""

    def __init__(self, client: End, server: End, chunk: Optional[int] = None) -> None:
        """Wire ``client`` and ``server``; nothing moves until :meth:`pump`."""
        self.ends: Dict[str, End] = {"client": client, "server": server}
        self.got: Dict[str, bytearray] = {"client": bytearray(), "server": bytearray()}
        self.errors: Dict[str, Exception] = {}
        self.chunk = chunk

    @property
    def client(self) -> TLSEngine:
        """The client end (when it is a syncpb engine)."""
        return self._engine("client")

    @property
    def server(self) -> TLSEngine:
        """The server end (when it is a syncpb engine)."""
        return self._engine("server")

    def _engine(self, name: str) -> TLSEngine:
        """The end called ``name``, which must be a syncpb engine."""
        end = self.ends[name]
        assert isinstance(end, TLSEngine), end
        return end

    def pump(self) -> "Link":
        """Move bytes both ways until both ends are quiet."""
        for _ in range(MAX_ROUNDS):
            moved = self._move("client", "server")
            moved = self._move("server", "client") or moved
            if not moved:
                return self
        raise AssertionError(f"the ends still talked after {MAX_ROUNDS} rounds")

    def ok(self) -> "Link":
        """Pump, and insist neither side failed."""
        self.pump()
        assert not self.errors, self.errors
        return self

    def _move(self, source: str, target: str) -> bool:
        """Deliver what ``source`` has to send (dropped if ``target`` failed)."""
        data = self.ends[source].data_to_send()
        if data and target not in self.errors:
            self._feed(target, data)
        return bool(data)

    def _feed(self, target: str, data: bytes) -> None:
        """Hand ``data`` to ``target`` in chunks; record plaintext or error."""
        step = self.chunk or len(data)
        try:
            for start in range(0, len(data), step):
                self.got[target] += self.ends[target].receive(data[start:start + step])
        except (TLSError, SSL.Error) as error:
            self.errors[target] = error


def peer_of(engine: TLSEngine) -> PeerCertificate:
    """The engine's peer certificate, which the test expects to exist."""
    certificate = engine.peer_certificate
    assert certificate is not None
    return certificate


def serving(files: CertFiles, version: Optional[str] = None, **kwargs: Any) -> ServerTLS:
    """Server settings for ``files``, capped at ``version`` if given."""
    tls = server_context(files.cert_path, files.key_path, **kwargs)
    if version is not None:
        tls.context.set_max_proto_version(VERSIONS[version])
    return tls


def trusting(material: TLSMaterial, **kwargs: Any) -> ClientTLS:
    """Client settings trusting the session's CA."""
    return client_context(ca=material.ca.cert_path, **kwargs)


def as_alice(material: TLSMaterial, files: Optional[CertFiles] = None) -> ClientTLS:
    """Client settings presenting ``files`` (default: the good client certificate)."""
    files = files or material.client
    return trusting(material, cert=files.cert_path, key=files.key_path)


def link(server: ServerTLS, client: ClientTLS, host: Optional[str] = "localhost",
         chunk: Optional[int] = None) -> Link:
    """A fresh client and server engine, wired together (not yet pumped)."""
    return Link(TLSEngine(client, False, host), TLSEngine(server, True), chunk)


def raw_context(version: int, files: Optional[CertFiles] = None) -> SSL.Context:
    """A pyOpenSSL context capped at ``version`` (old versions re-enabled)."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_max_proto_version(version)
    context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")  # OpenSSL 3 hides TLS < 1.2 otherwise
    if files is not None:
        context.use_certificate_chain_file(str(files.cert_path))
        context.use_privatekey_file(str(files.key_path))
    return context


@pytest.fixture(params=sorted(VERSIONS))
def version(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once with the server capped at each TLS version."""
    return str(request.param)


# ---------------------------------------------------------------- working connections


@pytest.mark.parametrize("chunk", [None, 1], ids=["whole", "byte-by-byte"])
def test_handshake_and_data_both_ways(tls_material: TLSMaterial, version: str,
                                      chunk: Optional[int]) -> None:
    pair = link(serving(tls_material.server, version), trusting(tls_material), chunk=chunk)
    client, server = pair.client, pair.server
    client.send(b"sent before the handshake")
    server.send(b"queued by the server too")
    assert not client.handshake_done and not server.handshake_done

    pair.ok()
    assert client.handshake_done and server.handshake_done
    assert client.protocol == server.protocol == version
    assert pair.got == {"server": b"sent before the handshake",
                        "client": b"queued by the server too"}

    client.send(b" and after")
    server.send(b" and the reply")
    pair.ok()
    assert pair.got["server"] == b"sent before the handshake and after"
    assert pair.got["client"] == b"queued by the server too and the reply"


def test_client_speaks_first_and_server_waits(tls_material: TLSMaterial) -> None:
    client = TLSEngine(trusting(tls_material), False, "localhost")
    server = TLSEngine(serving(tls_material.server), True)
    assert client.data_to_send()[:1] == b"\x16"  # a handshake record: the ClientHello
    assert server.data_to_send() == b""
    assert server.receive(b"") == b""


def test_trailing_application_data_leaves_the_same_receive(tls_material: TLSMaterial,
                                                           version: str) -> None:
    client = TLSEngine(trusting(tls_material), False, "localhost")
    server = TLSEngine(serving(tls_material.server, version), True)
    client.send(b"client data")
    server.send(b"server data")
    finishing: Dict[str, bytes] = {}
    for _ in range(MAX_ROUNDS):
        moved = False
        for name, source, target in (("server", client, server), ("client", server, client)):
            data = source.data_to_send()
            if data:
                moved, before = True, target.handshake_done
                plaintext = target.receive(data)
                if not before and target.handshake_done:
                    finishing[name] = plaintext
        if not moved:
            break
    # TLS 1.3: the client's Finished carries its data; TLS 1.2: the server's does.
    if version == "TLSv1.3":
        assert finishing["server"] == b"client data"
    else:
        assert finishing["client"] == b"server data"


def test_one_mebibyte_round_trip(tls_material: TLSMaterial, version: str) -> None:
    payload = os.urandom(1 << 20)
    pair = link(serving(tls_material.server, version), trusting(tls_material))
    pair.client.send(payload)
    pair.ok()
    assert bytes(pair.got["server"]) == payload
    pair.server.send(bytes(pair.got["server"][::-1]))
    pair.ok()
    assert bytes(pair.got["client"]) == payload[::-1]


def test_close_notify_both_ways(tls_material: TLSMaterial, version: str) -> None:
    pair = link(serving(tls_material.server, version), trusting(tls_material)).ok()
    client, server = pair.client, pair.server
    client.send(b"last words")
    client.close()
    pair.ok()
    assert pair.got["server"] == b"last words"
    assert server.closed_by_peer and not client.closed_by_peer
    with pytest.raises(ValueError):
        client.send(b"too late")

    server.send(b"goodbye")
    server.close()
    pair.ok()
    assert pair.got["client"] == b"goodbye" and client.closed_by_peer
    assert client.receive_eof() is True and server.receive_eof() is True


def test_close_before_the_handshake_waits_for_it(tls_material: TLSMaterial) -> None:
    pair = link(serving(tls_material.server), trusting(tls_material))
    client, server = pair.client, pair.server
    client.send(b"queued")
    client.close()
    pair.ok()
    assert pair.got["server"] == b"queued" and server.closed_by_peer


def test_end_of_stream(tls_material: TLSMaterial) -> None:
    server = TLSEngine(serving(tls_material.server), True)
    with pytest.raises(TLSError, match="during the TLS handshake"):
        server.receive_eof()
    pair = link(serving(tls_material.server), trusting(tls_material)).ok()
    assert pair.server.receive_eof() is False  # no close_notify: not clean


# ---------------------------------------------------------------- certificates that fail


def test_untrusted_server_certificate(tls_material: TLSMaterial, version: str) -> None:
    pair = link(serving(tls_material.untrusted_server, version), trusting(tls_material)).pump()
    error = pair.errors["client"]
    assert type(error) is CertificateUntrusted
    assert "unknown CA" in str(error) and "CN=localhost" in str(error)
    assert isinstance(error.__cause__, SSL.Error)
    assert isinstance(pair.errors["server"], TLSError)
    assert "refused this server's certificate" in str(pair.errors["server"])


def test_system_store_does_not_trust_a_private_ca(tls_material: TLSMaterial) -> None:
    pair = link(serving(tls_material.server), client_context()).pump()
    assert type(pair.errors["client"]) is CertificateUntrusted


@pytest.mark.parametrize("which, reason", [("expired_server", "has expired"),
                                           ("not_yet_valid_server", "is not yet valid")])
def test_expired_server_certificate(tls_material: TLSMaterial, which: str, reason: str) -> None:
    pair = link(serving(getattr(tls_material, which)), trusting(tls_material)).pump()
    error = pair.errors["client"]
    assert type(error) is CertificateExpired and reason in str(error)
    assert isinstance(error.__cause__, SSL.Error)


def test_hostname_mismatch(tls_material: TLSMaterial, version: str) -> None:
    pair = link(serving(tls_material.wrong_host_server, version), trusting(tls_material)).pump()
    error = pair.errors["client"]
    assert type(error) is HostnameMismatch
    assert "wrong.example" in str(error) and "'localhost'" in str(error)
    assert error.__cause__ is not None
    assert pair.server.closed_by_peer  # the client said goodbye
    assert pair.got["server"] == b""


@pytest.mark.parametrize("host, valid", [
    ("127.0.0.1", True), ("::1", True), ("pb.test", True), ("localhost", True),
    ("127.0.0.2", False), ("10.0.0.1", False), ("other.test", False),
])
def test_names_and_ip_addresses(tls_material: TLSMaterial, host: str, valid: bool) -> None:
    pair = link(serving(tls_material.server), trusting(tls_material), host=host).pump()
    if valid:
        assert not pair.errors and pair.client.verified
        return
    error = pair.errors["client"]
    assert type(error) is HostnameMismatch
    assert repr(host) in str(error) and "127.0.0.1" in str(error) and "pb.test" in str(error)


def test_server_hostname_overrides_the_connected_name(tls_material: TLSMaterial) -> None:
    server = serving(tls_material.server)
    unix = trusting(tls_material, server_hostname="pb.test")
    link(server, unix, host=None).ok()  # tls+unix://: no host of its own
    link(server, unix, host="wrong.example").ok()
    elsewhere = trusting(tls_material, server_hostname="elsewhere.test")
    error = link(server, elsewhere, host="localhost").pump().errors["client"]
    assert type(error) is HostnameMismatch and "'elsewhere.test'" in str(error)


def test_missing_client_certificate(tls_material: TLSMaterial, version: str) -> None:
    required = serving(tls_material.server, version, ca=tls_material.ca.cert_path,
                       require_client_cert=True)
    pair = link(required, trusting(tls_material)).pump()
    assert type(pair.errors["server"]) is ClientCertificateRequired
    assert "sent no certificate" in str(pair.errors["server"])
    assert type(pair.errors["client"]) is ClientCertificateRequired
    assert "requires a client certificate" in str(pair.errors["client"])
    # TLS 1.3: the client's own handshake had completed before the refusal came.
    assert pair.client.handshake_done is (version == "TLSv1.3")


def test_tls13_refusal_arrives_on_a_later_receive(tls_material: TLSMaterial) -> None:
    required = serving(tls_material.server, "TLSv1.3", ca=tls_material.ca.cert_path,
                       require_client_cert=True)
    client = TLSEngine(trusting(tls_material), False, "localhost")
    server = TLSEngine(required, True)
    server.receive(client.data_to_send())  # ClientHello
    client.receive(server.data_to_send())  # ServerHello ... Finished, CertificateRequest
    assert client.handshake_done  # it looks done ...
    client.send(b"hello?")
    with pytest.raises(ClientCertificateRequired):
        server.receive(client.data_to_send())
    with pytest.raises(ClientCertificateRequired, match="alert certificate required") as caught:
        client.receive(server.data_to_send())  # ... until the alert arrives
    with pytest.raises(ClientCertificateRequired) as again:  # a failed engine stays failed
        client.receive(b"")
    assert again.value is caught.value


@pytest.mark.parametrize("which, kind, reason", [
    ("untrusted_client", CertificateUntrusted, "unknown CA"),
    ("expired_client", CertificateExpired, "has expired"),
])
def test_refused_client_certificate(tls_material: TLSMaterial, version: str, which: str,
                                    kind: type, reason: str) -> None:
    required = serving(tls_material.server, version, ca=tls_material.ca.cert_path,
                       require_client_cert=True)
    pair = link(required, as_alice(tls_material, getattr(tls_material, which))).pump()
    assert type(pair.errors["server"]) is kind
    assert reason in str(pair.errors["server"]) and "client's certificate" in str(
        pair.errors["server"])
    assert type(pair.errors["client"]) is ClientCertificateRequired
    assert "refused our client certificate" in str(pair.errors["client"])


@pytest.mark.parametrize("chunk", [None, 1], ids=["whole", "byte-by-byte"])
def test_plain_pb_server_is_not_a_tls_peer(tls_material: TLSMaterial,
                                           chunk: Optional[int]) -> None:
    client = TLSEngine(trusting(tls_material), False, "localhost")
    with pytest.raises(NotTLSPeer, match="does not speak TLS") as caught:
        for start in range(0, len(PB_GREETING), chunk or len(PB_GREETING)):
            client.receive(PB_GREETING[start:start + (chunk or len(PB_GREETING))])
    assert isinstance(caught.value.__cause__, SSL.Error)


def test_no_cipher_in_common_is_not_a_client_certificate_problem(
        tls_material: TLSMaterial) -> None:
    # A handshake_failure alert before the ServerHello: nothing to do with certificates.
    context = raw_context(SSL.TLS1_2_VERSION, tls_material.server)
    context.set_cipher_list(b"ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")  # CBC: syncpb offers none
    raw_server = RawEnd(context, server_side=True)
    pair = Link(TLSEngine(trusting(tls_material), False, "localhost"), raw_server).pump()
    error = pair.errors["client"]
    assert type(error) is TLSError and "handshake failure" in str(error)


def test_plain_client_is_not_a_tls_peer(tls_material: TLSMaterial) -> None:
    server = TLSEngine(serving(tls_material.server), True)
    with pytest.raises(NotTLSPeer):
        server.receive(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")


# ---------------------------------------------------------------- verify=False, identities


def test_verify_false_warns_and_accepts_anything(tls_material: TLSMaterial,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    careless = client_context(verify=False)
    with caplog.at_level(logging.WARNING, logger="syncpb"):
        for files in (tls_material.untrusted_server, tls_material.expired_server):
            pair = link(serving(files), careless, host="127.0.0.1").ok()
            assert pair.client.handshake_done and not pair.client.verified
            assert peer_of(pair.client).common_name == "localhost"
    warnings = [r for r in caplog.records if r.name == "syncpb" and r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per connection
    assert "verification is DISABLED" in warnings[0].getMessage()


def test_server_sees_the_client_certificate(tls_material: TLSMaterial, version: str) -> None:
    required = serving(tls_material.server, version, ca=tls_material.ca.cert_path,
                       require_client_cert=True)
    pair = link(required, as_alice(tls_material)).ok()
    server, client = pair.server, pair.client
    peer = server.peer_certificate
    assert peer is not None and server.verified
    assert peer.common_name == "alice" and peer.subject == "CN=alice"
    assert peer.fingerprint_sha256 == tls_material.client.identity.fingerprint_sha256
    assert peer_of(client).fingerprint_sha256 == \
        tls_material.server.identity.fingerprint_sha256


@pytest.mark.parametrize("with_cert", [False, True])
def test_optional_client_certificate(tls_material: TLSMaterial, with_cert: bool) -> None:
    optional = serving(tls_material.server, ca=tls_material.ca.cert_path)
    client = as_alice(tls_material) if with_cert else trusting(tls_material)
    server = link(optional, client).ok().server
    assert server.verified is with_cert
    assert (server.peer_certificate is not None) is with_cert


def test_pem_bytes_work_like_paths(tls_material: TLSMaterial) -> None:
    server = server_context(tls_material.server.cert_pem, tls_material.server.key_pem,
                            ca=tls_material.ca.cert_pem, require_client_cert=True)
    client = client_context(ca=tls_material.ca.cert_pem, cert=tls_material.client.cert_pem,
                            key=tls_material.client.key_pem)
    pair = link(server, client).ok()
    assert peer_of(pair.server).common_name == "alice"


# ---------------------------------------------------------------- reloading


def test_reload_serves_a_renewed_certificate(tls_material: TLSMaterial,
                                             tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_bytes(tls_material.server.cert_pem)
    key_path.write_bytes(tls_material.server.key_pem)
    tls = server_context(cert_path, key_path)
    old = link(tls, trusting(tls_material)).ok()

    renewed = certs.make_server_cert(tls_material.ca.identity, SERVER_HOSTS)
    cert_path.write_bytes(renewed.cert_pem)
    key_path.write_bytes(renewed.key_pem)
    tls.reload()
    new = link(tls, trusting(tls_material)).ok()
    assert peer_of(new.client).fingerprint_sha256 == renewed.fingerprint_sha256

    old.client.send(b"still here")  # the old connection keeps its context
    old.ok()
    assert old.got["server"] == b"still here"
    assert peer_of(old.client).fingerprint_sha256 == \
        tls_material.server.identity.fingerprint_sha256


def test_failed_reload_keeps_the_current_context(tls_material: TLSMaterial,
                                                 tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert_path.write_bytes(tls_material.server.cert_pem)
    key_path.write_bytes(tls_material.server.key_pem)
    tls = server_context(cert_path, key_path)
    current = tls.context
    key_path.write_bytes(tls_material.client.key_pem)  # a key of another certificate
    with pytest.raises(ValueError, match="does not match"):
        tls.reload()
    assert tls.context is current
    link(tls, trusting(tls_material)).ok()


# ---------------------------------------------------------------- protocol versions


def test_tls12_only_peers_connect(tls_material: TLSMaterial) -> None:
    raw_client = RawEnd(raw_context(SSL.TLS1_2_VERSION), server_side=False)
    pair = Link(raw_client, TLSEngine(serving(tls_material.server), True)).ok()
    raw_client.send(b"over TLS 1.2")
    pair.ok()
    assert pair.server.protocol == "TLSv1.2" and pair.got["server"] == b"over TLS 1.2"

    raw_server = RawEnd(raw_context(SSL.TLS1_2_VERSION, tls_material.server), server_side=True)
    pair = Link(TLSEngine(trusting(tls_material), False, "localhost"), raw_server).ok()
    assert pair.client.protocol == "TLSv1.2" and pair.client.verified


def test_tls11_peers_are_refused(tls_material: TLSMaterial) -> None:
    raw_client = RawEnd(raw_context(SSL.TLS1_1_VERSION), server_side=False)
    pair = Link(raw_client, TLSEngine(serving(tls_material.server), True))
    error = pair.pump().errors["server"]
    assert type(error) is TLSError and "TLS version" in str(error)
    assert isinstance(pair.errors["client"], SSL.Error)  # it did try: it got an alert

    raw_server = RawEnd(raw_context(SSL.TLS1_1_VERSION, tls_material.server), server_side=True)
    pair = Link(TLSEngine(trusting(tls_material), False, "localhost"), raw_server).pump()
    assert type(pair.errors["client"]) is TLSError
    assert "TLS version" in str(pair.errors["client"])


# ---------------------------------------------------------------- settings


def test_settings_that_cannot_work(tls_material: TLSMaterial) -> None:
    server, ca = tls_material.server, tls_material.ca
    with pytest.raises(ValueError, match="does not match"):
        server_context(server.cert_path, tls_material.client.key_path)
    with pytest.raises(ValueError, match="needs ca="):
        server_context(server.cert_path, server.key_path, require_client_cert=True)
    with pytest.raises(ValueError, match="contradicts"):
        server_context(server.cert_path, server.key_path, ca=ca.cert_path,
                       require_client_cert=True, request_client_cert=False)
    with pytest.raises(ValueError, match="no PEM certificate"):
        server_context(server.key_pem, server.key_pem)
    with pytest.raises(OSError):
        client_context(ca=tls_material.directory / "missing.pem")
    with pytest.raises(ValueError, match="needs its name"):
        TLSEngine(trusting(tls_material), False)
    with pytest.raises(ValueError, match="cannot make a server engine"):
        TLSEngine(trusting(tls_material), True)


# ---------------------------------------------------------------- a real socket


def drive(sock: socket.socket, engine: TLSEngine, received: bytearray,
          until: Callable[[], bool]) -> None:
    """Write what the engine has, read and feed what arrives, until ``until()``."""
    while True:
        sock.sendall(engine.data_to_send())
        if until():
            return
        data = sock.recv(65536)
        if not data:
            raise AssertionError("the peer closed the socket early")
        received += engine.receive(data)


def serve_echo(listener: socket.socket, tls: ServerTLS, size: int,
               outcome: List[object]) -> None:
    """Accept one connection, echo ``size`` bytes reversed, close cleanly."""
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(WAIT)
            engine, received = TLSEngine(tls, True), bytearray()
            drive(conn, engine, received, lambda: len(received) >= size)
            engine.send(bytes(received[::-1]))
            engine.close()
            drive(conn, engine, received, lambda: engine.closed_by_peer)
            outcome.append(engine.peer_certificate)
    except BaseException as error:  # reported to the test's thread
        outcome.append(error)


def test_engines_over_a_real_socket(tls_material: TLSMaterial) -> None:
    tls = serving(tls_material.server, ca=tls_material.ca.cert_path, require_client_cert=True)
    payload = os.urandom(300_000)
    outcome: List[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(WAIT)
        thread = threading.Thread(target=serve_echo, daemon=True,
                                  args=(listener, tls, len(payload), outcome))
        thread.start()
        with socket.create_connection(listener.getsockname(), timeout=WAIT) as sock:
            engine, received = TLSEngine(as_alice(tls_material), False, "127.0.0.1"), bytearray()
            engine.send(payload)
            drive(sock, engine, received,
                  lambda: len(received) >= len(payload) and engine.closed_by_peer)
            engine.close()
            sock.sendall(engine.data_to_send())
        thread.join(WAIT)
    assert not thread.is_alive()
    assert bytes(received) == payload[::-1]
    assert len(outcome) == 1 and isinstance(outcome[0], PeerCertificate), outcome
    assert outcome[0].common_name == "alice"
