"""TLS end to end: each refusal is a distinct syncpb error, with a real handshake.

Every case runs a real server on 127.0.0.1 (or a unix socket) with
certificates minted for the session. The client gets the TLSError subclass
that says why, promptly; the server logs the reason and keeps serving
everyone else (checked after each refusal by a good client).
"""

from __future__ import annotations

import logging
import socket

import pytest

import syncpb
from syncpb import tls
from syncpb.tls import certs

WAIT = 10.0


class Echo(syncpb.Root):
    def remote_echo(self, value):
        return value


def serve(server_factory, tls_material, server=None, require=False, **server_kwargs):
    """A server with a TLS listener and a plain one; (server, tls address, plain address)."""
    server = server or tls_material.server
    srv, plain = server_factory(Echo(), start=False, **server_kwargs)
    context = tls.server_context(cert=server.cert_path, key=server.key_path,
                                 ca=tls_material.ca.cert_path, require_client_cert=require)
    secure = srv.listen("tls://127.0.0.1:0", tls=context)
    srv.start()
    return srv, secure, plain


def good_client(tls_material, **overrides):
    options = dict(ca=tls_material.ca.cert_path, cert=tls_material.client.cert_path,
                   key=tls_material.client.key_path)
    options.update(overrides)
    return tls.client_context(**options)


def still_serving(connect, address, tls_material):
    assert connect(address, tls=good_client(tls_material)).root.echo("ok") == "ok"


def test_an_untrusted_server_certificate(server_factory, connect, tls_material, caplog):
    _, secure, _ = serve(server_factory, tls_material, server=tls_material.untrusted_server)
    with pytest.raises(syncpb.CertificateUntrusted, match="unable to get local issuer"):
        syncpb.connect(secure, timeout=WAIT, tls=good_client(tls_material))


def test_an_expired_server_certificate(server_factory, connect, tls_material):
    _, secure, _ = serve(server_factory, tls_material, server=tls_material.expired_server)
    with pytest.raises(syncpb.CertificateExpired, match="expired"):
        syncpb.connect(secure, timeout=WAIT, tls=good_client(tls_material))


def test_a_hostname_mismatch(server_factory, connect, tls_material):
    _, secure, _ = serve(server_factory, tls_material, server=tls_material.wrong_host_server)
    with pytest.raises(syncpb.HostnameMismatch, match="wrong.example"):
        syncpb.connect(secure, timeout=WAIT, tls=good_client(tls_material))
    # and a name the real certificate does not have, asked for explicitly
    _, good, _ = serve(server_factory, tls_material)
    with pytest.raises(syncpb.HostnameMismatch, match="elsewhere.test"):
        syncpb.connect(good, timeout=WAIT,
                       tls=good_client(tls_material, server_hostname="elsewhere.test"))


def test_a_missing_client_certificate_when_one_is_required(server_factory, connect,
                                                           tls_material, caplog):
    _, secure, _ = serve(server_factory, tls_material, require=True)
    with caplog.at_level(logging.WARNING, logger="syncpb"):
        with pytest.raises(syncpb.ClientCertificateRequired):
            syncpb.connect(secure, timeout=WAIT, tls=tls.client_context(ca=tls_material.ca.cert_path))
        still_serving(connect, secure, tls_material)
    assert any("TLS handshake with" in r.getMessage() and "certificate" in r.getMessage()
               for r in caplog.records)


def test_a_client_certificate_from_another_ca_is_refused(server_factory, connect, tls_material):
    _, secure, _ = serve(server_factory, tls_material, require=True)
    stranger = good_client(tls_material, cert=tls_material.untrusted_client.cert_path,
                           key=tls_material.untrusted_client.key_path)
    with pytest.raises(syncpb.ClientCertificateRequired, match="refused"):
        syncpb.connect(secure, timeout=WAIT, tls=stranger)
    still_serving(connect, secure, tls_material)


def test_a_tls_client_at_a_plain_port(server_factory, connect, tls_material):
    _, _, plain = serve(server_factory, tls_material)
    port = plain.rsplit(":", 1)[1]
    with pytest.raises(syncpb.NotTLSPeer):
        syncpb.connect(f"tls://127.0.0.1:{port}", timeout=WAIT, tls=good_client(tls_material))
    assert connect(plain).root.echo("plain still fine") == "plain still fine"


def test_a_plain_client_at_a_tls_port_fails_at_its_timeout_with_a_hint(server_factory,
                                                                       tls_material):
    _, secure, _ = serve(server_factory, tls_material)
    port = secure.rsplit(":", 1)[1]
    with pytest.raises(syncpb.ConnectionFailed, match="tls://"):
        syncpb.connect(f"tcp://127.0.0.1:{port}", timeout=0.5)


def test_verify_false_connects_to_anything_and_warns(server_factory, tls_material, caplog):
    _, secure, _ = serve(server_factory, tls_material, server=tls_material.untrusted_server)
    with caplog.at_level(logging.WARNING, logger="syncpb"):
        with syncpb.connect(secure, timeout=WAIT, tls=tls.client_context(verify=False)) as conn:
            assert conn.root.echo(1) == 1
    assert any("verif" in r.getMessage().lower() for r in caplog.records)


def test_the_handshake_timeout_drops_a_silent_client(server_factory, connect, tls_material,
                                                     caplog):
    _, secure, plain = serve(server_factory, tls_material, handshake_timeout=0.3)
    with caplog.at_level(logging.INFO, logger="syncpb"):
        for address in (secure, plain):
            port = int(address.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as silent:
                silent.settimeout(WAIT)  # far beyond the server's 0.3 s: a hang fails here
                while silent.recv(4096):  # the server may greet (PB), then it hangs up
                    pass
    messages = [r.getMessage() for r in caplog.records]
    assert any("no TLS handshake within 0.3 s" in m for m in messages)
    assert any("did not complete the handshake within 0.3 seconds" in m for m in messages)
    still_serving(connect, secure, tls_material)


def test_a_certificate_login(server_factory, connect, tls_material):
    class Account(syncpb.Avatar):
        def __init__(self, name):
            self.name = name

        def perspective_whoami(self):
            return self.name

    class Realm:
        def requestAvatar(self, avatar_id, mind, *interfaces):  # noqa: N802
            return Account(avatar_id)

    portal = syncpb.Portal(Realm(), [tls.ClientCertificateChecker(allowed_names=["alice"])])
    srv, _ = server_factory(portal, start=False)
    context = tls.server_context(cert=tls_material.server.cert_path,
                                 key=tls_material.server.key_path,
                                 ca=tls_material.ca.cert_path, require_client_cert=True)
    secure = srv.listen("tls://127.0.0.1:0", tls=context)
    srv.start()
    avatar = connect(secure, tls=good_client(tls_material)).login_anonymous(timeout=WAIT)
    assert avatar.whoami() == b"alice"


def test_reload_tls_serves_a_renewed_certificate_without_dropping_connections(
        server_factory, connect, tls_material, tmp_path):
    ca = certs.Identity(tls_material.ca.cert_pem, tls_material.ca.key_pem)
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    first = certs.make_server_cert(ca, ["127.0.0.1"])
    cert_file.write_bytes(first.cert_pem)
    key_file.write_bytes(first.key_pem)
    srv, _ = server_factory(Echo(), start=False)
    secure = srv.listen("tls://127.0.0.1:0",
                        tls=tls.server_context(cert=cert_file, key=key_file))
    srv.start()
    old = connect(secure, tls=tls.client_context(ca=tls_material.ca.cert_path))
    assert old.peer_info.certificate.fingerprint_sha256 == first.fingerprint_sha256
    renewed = certs.make_server_cert(ca, ["127.0.0.1"])
    cert_file.write_bytes(renewed.cert_pem)
    key_file.write_bytes(renewed.key_pem)
    srv.reload_tls()
    new = connect(secure, tls=tls.client_context(ca=tls_material.ca.cert_path))
    assert new.peer_info.certificate.fingerprint_sha256 == renewed.fingerprint_sha256
    assert old.root.echo("still here") == "still here"


def test_tls_needs_a_context_and_plain_refuses_one(tls_material):
    server = syncpb.Server(Echo())
    try:
        with pytest.raises(ValueError, match="tls="):
            server.listen("tls://127.0.0.1:0")
        with pytest.raises(ValueError, match="tls="):
            server.listen("tcp://127.0.0.1:0", tls=tls.server_context(
                cert=tls_material.server.cert_path, key=tls_material.server.key_path))
        with pytest.raises(ValueError, match="tls"):
            syncpb.connect("tcp://127.0.0.1:1", tls=tls.client_context())
        with pytest.raises(ValueError, match="server_hostname"):
            syncpb.connect("tls+unix:///nonexistent/pb.sock",
                           tls=tls.client_context(ca=tls_material.ca.cert_path))
    finally:
        server.stop()


def test_a_plain_server_never_loads_openssl():
    import subprocess
    import sys
    code = ("import sys, syncpb\n"
            "s = syncpb.Server(syncpb.Root()); a = s.listen('tcp://127.0.0.1:0'); s.start()\n"
            "c = syncpb.connect(a, timeout=5); c.close(); s.stop()\n"
            "print('OpenSSL' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
