"""syncpb.tls.certs and ``python -m syncpb tls init``: what the certificates say,
that they chain (cryptography's verifier and OpenSSL's), that the refused ones
are refused for the right reason, the files' modes, and a real TLS handshake
(stdlib :mod:`ssl`, client certificate required) with the minted files.

Everything is minted at run time; nothing sleeps; every wait is bounded.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from OpenSSL import crypto

import syncpb
from syncpb.cli import main
from syncpb.tls import certs

from tlscerts import CLIENT_NAME, SERVER_HOSTS, WRONG_HOST, CertFiles, TLSMaterial

WAIT = 10.0  # seconds: socket operations and thread joins
CLI_WAIT = 30.0  # seconds: one ``python -m syncpb`` run


def now() -> datetime.datetime:
    """The current time, read when a check runs: certificates are minted
    during the session (valid from a few minutes before their minting), so
    a time taken when this module was collected can precede them."""
    return datetime.datetime.now(datetime.timezone.utc)


# OpenSSL's X509_V_ERR_* codes, as ssl.SSLCertVerificationError.verify_code gives them
NOT_YET_VALID, EXPIRED, UNKNOWN_ISSUER, HOSTNAME_MISMATCH = 9, 10, 20, 62
DEV_SET = [name for name, _ in certs.DEV_SET_FILES]


# -- helpers -------------------------------------------------------------------

def subject_for(host: str) -> Union[x509.DNSName, x509.IPAddress]:
    """The name a client verifies a server certificate against."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def verify_server(ca: x509.Certificate, leaf: x509.Certificate,
                  host: str) -> List[x509.Certificate]:
    """cryptography's (WebPKI-profile) verification of a server certificate, now."""
    builder = PolicyBuilder().store(Store([ca])).time(now())
    return builder.build_server_verifier(subject_for(host)).verify(leaf, [])


def openssl_verify(ca: x509.Certificate, leaf: x509.Certificate) -> None:
    """OpenSSL's chain verification (pyOpenSSL), at the current time.

    Raises:
        crypto.X509StoreContextError: the chain does not verify.
    """
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(ca))
    crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf)).verify_certificate()


def extension(cert: x509.Certificate, kind: type) -> x509.Extension:
    """``cert``'s extension of class ``kind``."""
    return cert.extensions.get_extension_for_class(kind)


@dataclass
class Handshake:
    """What each side of one TLS connection saw."""

    server_error: Optional[BaseException] = None
    client_error: Optional[BaseException] = None
    client_cn: Optional[str] = None  # the client certificate's CN, as the server saw it
    reply: bytes = b""


def server_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """A server context that requires a client certificate from ``client_ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_cert_chain(cert, key)
    context.load_verify_locations(client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: Path, identity: Optional[CertFiles] = None) -> ssl.SSLContext:
    """A client context trusting ``ca`` (hostname checked), optionally with a certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(ca)
    if identity is not None:
        context.load_cert_chain(identity.cert_path, identity.key_path)
    return context


def _serve_once(context: ssl.SSLContext, sock: socket.socket, seen: Handshake) -> None:
    """Server side: handshake, note the client's CN, echo one byte back."""
    try:
        with context.wrap_socket(sock, server_side=True) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None  # CERT_REQUIRED
            seen.client_cn = certs.common_name(x509.load_der_x509_certificate(der))
            tls.sendall(b"echo:" + tls.recv(1))
    except (ssl.SSLError, OSError) as exc:
        seen.server_error = exc


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> Handshake:
    """Connect ``client`` to ``server`` over a socket pair; one byte each way."""
    server_sock, client_sock = socket.socketpair()
    seen = Handshake()
    for sock in (server_sock, client_sock):
        sock.settimeout(WAIT)
    thread = threading.Thread(target=_serve_once, args=(server, server_sock, seen))
    thread.start()
    try:
        with client.wrap_socket(client_sock, server_hostname=hostname) as tls:
            tls.sendall(b"!")
            seen.reply = tls.recv(16)
    except (ssl.SSLError, OSError) as exc:
        seen.client_error = exc
    finally:
        client_sock.close()
        thread.join(WAIT)
        server_sock.close()
    assert not thread.is_alive(), "the server side of the handshake did not finish"
    return seen


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m syncpb ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "syncpb", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=CLI_WAIT)


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test that changes it."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def modes(paths: Dict[str, Path]) -> Dict[str, int]:
    """The permission bits of each path."""
    return {name: path.stat().st_mode & 0o777 for name, path in paths.items()}


def contents(directory: Path, names: Sequence[str]) -> Dict[str, bytes]:
    """The bytes of each named file in ``directory``."""
    return {name: (directory / name).read_bytes() for name in names}


# -- what the certificates say -----------------------------------------------------

def test_ca_is_a_self_signed_certificate_authority(tls_material: TLSMaterial) -> None:
    ca = tls_material.ca.certificate
    assert ca.subject == ca.issuer and tls_material.ca.identity.common_name == \
        "syncpb development CA"
    ca.verify_directly_issued_by(ca)
    constraints = extension(ca, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = extension(ca, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert extension(ca, x509.SubjectKeyIdentifier).value.digest
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days == 3650


def test_server_certificate_names_every_host(tls_material: TLSMaterial) -> None:
    cert = tls_material.server.certificate
    san = extension(cert, x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "pb.test"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert tls_material.server.identity.subject_alt_names == list(SERVER_HOSTS)
    assert tls_material.server.identity.common_name == "localhost"  # the first host


def test_leaf_extensions(tls_material: TLSMaterial) -> None:
    ca_ski = extension(tls_material.ca.certificate, x509.SubjectKeyIdentifier).value.digest
    for files, purpose in [(tls_material.server, ExtendedKeyUsageOID.SERVER_AUTH),
                           (tls_material.client, ExtendedKeyUsageOID.CLIENT_AUTH)]:
        cert = files.certificate
        assert list(extension(cert, x509.ExtendedKeyUsage).value) == [purpose]
        constraints = extension(cert, x509.BasicConstraints)
        assert constraints.critical and not constraints.value.ca
        usage = extension(cert, x509.KeyUsage).value
        assert usage.digital_signature and not usage.key_encipherment  # EC keys
        assert not usage.key_cert_sign
        assert extension(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski
        assert isinstance(files.identity.private_key, ec.EllipticCurvePrivateKey)
        assert files.identity.private_key.curve.name == "secp256r1"
        assert cert.issuer == tls_material.ca.certificate.subject


def test_client_certificate_names_the_user(tls_material: TLSMaterial) -> None:
    assert tls_material.client.identity.common_name == CLIENT_NAME == "alice"
    assert tls_material.client.identity.subject_alt_names == []
    assert tls_material.other_ca.identity.common_name == "other CA"


@pytest.mark.parametrize("host", SERVER_HOSTS)
def test_server_certificate_chains_to_the_ca(tls_material: TLSMaterial, host: str) -> None:
    chain = verify_server(tls_material.ca.certificate, tls_material.server.certificate, host)
    assert chain == [tls_material.server.certificate, tls_material.ca.certificate]


def test_openssl_verifies_the_good_chains(tls_material: TLSMaterial) -> None:
    openssl_verify(tls_material.ca.certificate, tls_material.server.certificate)
    openssl_verify(tls_material.ca.certificate, tls_material.client.certificate)
    tls_material.client.certificate.verify_directly_issued_by(tls_material.ca.certificate)


@pytest.mark.parametrize("name, code", [
    ("untrusted_server", UNKNOWN_ISSUER), ("untrusted_client", UNKNOWN_ISSUER),
    ("expired_server", EXPIRED), ("expired_client", EXPIRED),
    ("not_yet_valid_server", NOT_YET_VALID),
])
def test_openssl_refuses_the_bad_chains(tls_material: TLSMaterial, name: str, code: int) -> None:
    bad: CertFiles = getattr(tls_material, name)
    with pytest.raises(crypto.X509StoreContextError) as caught:
        openssl_verify(tls_material.ca.certificate, bad.certificate)
    assert caught.value.errors[0] == code


def test_expired_and_future_certificates(tls_material: TLSMaterial) -> None:
    moment = now()
    for files in (tls_material.expired_server, tls_material.expired_client):
        assert files.certificate.not_valid_after_utc < moment
    assert tls_material.not_yet_valid_server.certificate.not_valid_before_utc > moment
    with pytest.raises(VerificationError, match="not valid at validation time"):
        verify_server(tls_material.ca.certificate, tls_material.expired_server.certificate,
                      "localhost")
    with pytest.raises(VerificationError):
        verify_server(tls_material.ca.certificate,
                      tls_material.not_yet_valid_server.certificate, "localhost")


def test_wrong_host_and_untrusted_servers_fail_verification(tls_material: TLSMaterial) -> None:
    ca = tls_material.ca.certificate
    verify_server(ca, tls_material.wrong_host_server.certificate, WRONG_HOST)
    with pytest.raises(VerificationError):
        verify_server(ca, tls_material.wrong_host_server.certificate, "localhost")
    with pytest.raises(VerificationError):
        verify_server(ca, tls_material.untrusted_server.certificate, "localhost")
    verify_server(tls_material.other_ca.certificate, tls_material.untrusted_server.certificate,
                  "localhost")


def test_fixture_files_match_the_pem_bytes(tls_material: TLSMaterial) -> None:
    names = ["ca", "server", "client", "other_ca", "untrusted_server", "untrusted_client",
             "expired_server", "not_yet_valid_server", "wrong_host_server", "expired_client"]
    for name in names:
        files: CertFiles = getattr(tls_material, name)
        assert files.cert_path.read_bytes() == files.cert_pem
        assert files.key_path.read_bytes() == files.key_pem
        assert files.key_path.stat().st_mode & 0o777 == 0o600
        assert certs.load_identity(files.cert_path, files.key_path) == files.identity


# -- minting options and bad input -------------------------------------------------------

def test_rsa_keys() -> None:
    ca = certs.make_ca(key_type="rsa")
    server = certs.make_server_cert(ca, ["a.test"], key_type="rsa")
    assert isinstance(server.private_key, rsa.RSAPrivateKey)
    assert server.private_key.key_size == 2048
    usage = extension(server.certificate, x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    verify_server(ca.certificate, server.certificate, "a.test")
    mixed = certs.make_client_cert(ca, "bob")  # an EC leaf under an RSA CA
    mixed.certificate.verify_directly_issued_by(ca.certificate)


def test_validity_window() -> None:
    ca = certs.make_ca(days=30)
    cert = certs.make_server_cert(ca, ["a.test"], days=10).certificate
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=10)
    assert cert.not_valid_before_utc <= datetime.datetime.now(datetime.timezone.utc)
    start = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    end = start + datetime.timedelta(hours=1)
    cert = certs.make_client_cert(ca, "bob", not_before=start, not_after=end).certificate
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (start, end)
    cert = certs.make_client_cert(ca, "bob", days=2, not_after=end).certificate
    assert cert.not_valid_before_utc == end - datetime.timedelta(days=2)
    with pytest.raises(ValueError, match="later than"):
        certs.make_server_cert(ca, ["a.test"], not_before=end, not_after=start)
    with pytest.raises(ValueError, match="positive"):
        certs.make_ca(days=0)


@pytest.mark.parametrize("hosts, expected", [
    (["B\u00fccher.example"], ["xn--bcher-kva.example"]),
    (["*.pb.test", "pb.test"], ["*.pb.test", "pb.test"]),
    (["A.Test.", "a.test", "127.0.0.1", "127.0.0.1"], ["a.test", "127.0.0.1"]),
    (["2001:DB8::1"], ["2001:db8::1"]),
])
def test_host_forms(hosts: List[str], expected: List[str]) -> None:
    server = certs.make_server_cert(certs.make_ca(), hosts)
    assert server.subject_alt_names == expected


def test_a_long_first_host_leaves_the_subject_empty() -> None:
    host = "x" * 63 + ".pb.test"
    ca = certs.make_ca()
    server = certs.make_server_cert(ca, [host])
    assert server.common_name is None
    assert extension(server.certificate, x509.SubjectAlternativeName).critical
    verify_server(ca.certificate, server.certificate, host)


@pytest.mark.parametrize("hosts", [[], ["bad host"], ["127.1"], ["*.com"], ["a..b"], ["-a.test"],
                                   [""], ["x" * 64 + ".test"]])
def test_bad_hosts_are_refused(hosts: List[str]) -> None:
    with pytest.raises(ValueError):
        certs.make_server_cert(certs.make_ca(), hosts)


def test_bad_arguments_are_refused(tls_material: TLSMaterial) -> None:
    ca = tls_material.ca.identity
    with pytest.raises(TypeError, match="single string"):
        certs.make_server_cert(ca, "localhost")
    for name in ["", "x" * 65, " alice", "ali\nce"]:
        with pytest.raises(ValueError, match="common name"):
            certs.make_client_cert(ca, name)
    with pytest.raises(ValueError, match="key_type"):
        certs.make_ca(key_type="dsa")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a CA"):
        certs.make_client_cert(tls_material.server.identity, "bob")
    mismatched = certs.Identity(ca.cert_pem, tls_material.other_ca.key_pem)
    with pytest.raises(ValueError, match="does not belong"):
        certs.make_client_cert(mismatched, "bob")


def test_a_ca_without_key_identifier_can_sign() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bare CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now() - datetime.timedelta(days=1))
            .not_valid_after(now() + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    bare = certs.Identity(cert.public_bytes(serialization.Encoding.PEM),
                          key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    client = certs.make_client_cert(bare, "bob")
    aki = extension(client.certificate, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == x509.SubjectKeyIdentifier.from_public_key(
        key.public_key()).digest
    client.certificate.verify_directly_issued_by(cert)


def test_identity_helpers(tls_material: TLSMaterial) -> None:
    identity = tls_material.server.identity
    assert b"PRIVATE KEY" not in repr(identity).encode()
    assert identity.fingerprint_sha256 == certs.fingerprint_sha256(identity.certificate)
    assert len(identity.fingerprint_sha256) == 64 and int(identity.fingerprint_sha256, 16) >= 0
    with pytest.raises(ValueError, match="not the private key"):
        certs.load_identity(tls_material.server.cert_path, tls_material.client.key_path)


# -- write_dev_set -------------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o022, 0o077, 0o000])
def test_dev_set_modes(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    directory = tmp_path / "parent" / "dev"
    written = certs.write_dev_set(directory, ["a.test", "127.0.0.1"])
    assert list(written) == DEV_SET
    assert all(path == directory / name for name, path in written.items())
    assert modes(written) == dict(certs.DEV_SET_FILES)
    assert directory.stat().st_mode & 0o777 == 0o700 & ~mask
    assert sorted(os.listdir(directory)) == sorted(DEV_SET)  # no temporary files left


def test_dev_set_refuses_to_overwrite(tmp_path: Path) -> None:
    certs.write_dev_set(tmp_path, ["a.test"], client_name="alice")
    before = contents(tmp_path, DEV_SET)
    with pytest.raises(FileExistsError, match="ca.pem"):
        certs.write_dev_set(tmp_path, ["a.test"])
    assert contents(tmp_path, DEV_SET) == before
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "client.key").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="client.key"):
        certs.write_dev_set(lone, ["a.test"])
    assert sorted(os.listdir(lone)) == ["client.key"]
    assert (lone / "client.key").read_bytes() == b"keep me"


def test_dev_set_force_replaces_with_fresh_modes(tmp_path: Path) -> None:
    certs.write_dev_set(tmp_path, ["a.test"])
    before = contents(tmp_path, DEV_SET)
    (tmp_path / "server.key").chmod(0o644)  # an old key someone made readable
    (tmp_path / "notes.txt").write_text("unrelated")
    written = certs.write_dev_set(tmp_path, ["b.test"], client_name="bob", force=True)
    after = contents(tmp_path, DEV_SET)
    assert all(after[name] != before[name] for name in DEV_SET)
    assert modes(written) == dict(certs.DEV_SET_FILES)
    assert (tmp_path / "notes.txt").read_text() == "unrelated"
    assert sorted(os.listdir(tmp_path)) == sorted(DEV_SET + ["notes.txt"])
    server = certs.load_identity(written["server.pem"], written["server.key"])
    assert server.subject_alt_names == ["b.test"]


def test_dev_set_into_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(NotADirectoryError):
        certs.write_dev_set(target, ["a.test"])


# -- a real TLS handshake (stdlib ssl) ----------------------------------------------------

@pytest.mark.parametrize("hostname", SERVER_HOSTS)
def test_handshake_with_client_certificate(tls_material: TLSMaterial, hostname: str) -> None:
    server = server_context(tls_material.server.cert_path, tls_material.server.key_path,
                            tls_material.ca.cert_path)
    client = client_context(tls_material.ca.cert_path, tls_material.client)
    seen = handshake(server, client, hostname)
    assert (seen.server_error, seen.client_error) == (None, None)
    assert seen.client_cn == CLIENT_NAME
    assert seen.reply == b"echo:!"


@pytest.mark.parametrize("name, hostname, code", [
    ("untrusted_server", "localhost", UNKNOWN_ISSUER),
    ("expired_server", "localhost", EXPIRED),
    ("not_yet_valid_server", "127.0.0.1", NOT_YET_VALID),
    ("wrong_host_server", "localhost", HOSTNAME_MISMATCH),
])
def test_client_refuses_bad_server_certificates(tls_material: TLSMaterial, name: str,
                                                hostname: str, code: int) -> None:
    bad: CertFiles = getattr(tls_material, name)
    server = server_context(bad.cert_path, bad.key_path, tls_material.ca.cert_path)
    client = client_context(tls_material.ca.cert_path, tls_material.client)
    seen = handshake(server, client, hostname)
    assert isinstance(seen.client_error, ssl.SSLCertVerificationError), seen.client_error
    assert seen.client_error.verify_code == code
    assert seen.server_error is not None and seen.reply == b""


@pytest.mark.parametrize("name", [None, "expired_client", "untrusted_client"])
def test_server_refuses_bad_client_certificates(tls_material: TLSMaterial,
                                                name: Optional[str]) -> None:
    server = server_context(tls_material.server.cert_path, tls_material.server.key_path,
                            tls_material.ca.cert_path)
    identity = getattr(tls_material, name) if name else None
    client = client_context(tls_material.ca.cert_path, identity)
    seen = handshake(server, client, "pb.test")
    assert isinstance(seen.server_error, ssl.SSLError), seen.server_error
    assert seen.client_cn is None and seen.reply == b""


# -- python -m syncpb ---------------------------------------------------------------------

def test_cli_init_writes_a_verified_set(tmp_path: Path) -> None:
    directory = tmp_path / "dev"
    done = run_cli("tls", "init", str(directory), "--host", "a.test", "--host", "127.0.0.1",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    for name, mode in certs.DEV_SET_FILES:
        assert f"wrote {directory / name} (mode {mode:04o})" in done.stdout
    assert modes({name: directory / name for name in DEV_SET}) == dict(certs.DEV_SET_FILES)
    ca = certs.load_identity(directory / "ca.pem", directory / "ca.key")
    server = certs.load_identity(directory / "server.pem", directory / "server.key")
    client = certs.load_identity(directory / "client.pem", directory / "client.key")
    assert "names:       a.test, 127.0.0.1" in done.stdout
    assert "subject:     CN=client" in done.stdout
    for identity in (ca, server, client):
        fingerprint = identity.fingerprint_sha256.upper()
        assert ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)) in done.stdout
        expires = f"{identity.certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        assert expires in done.stdout
    for host in ("a.test", "127.0.0.1"):
        verify_server(ca.certificate, server.certificate, host)
    openssl_verify(ca.certificate, client.certificate)
    files = CertFiles(directory / "client.pem", directory / "client.key", client)
    seen = handshake(server_context(directory / "server.pem", directory / "server.key",
                                    directory / "ca.pem"),
                     client_context(directory / "ca.pem", files), "a.test")
    assert (seen.client_error, seen.server_error, seen.client_cn) == (None, None, "client")


def test_cli_client_name(tmp_path: Path) -> None:
    done = run_cli("tls", "init", "dev", "--host", "pb.test", "--client-name", "alice",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    client = certs.load_identity(tmp_path / "dev/client.pem", tmp_path / "dev/client.key")
    assert client.common_name == "alice"


def test_cli_missing_host_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("tls", "init", "dev", cwd=tmp_path)
    assert done.returncode == 2
    assert "--host" in done.stderr and "required" in done.stderr
    assert not (tmp_path / "dev").exists()


@pytest.mark.parametrize("args", [["tls", "init", "dev", "--host", "bad host"],
                                  ["tls", "init", "dev", "--host", "a.test",
                                   "--client-name", ""],
                                  ["tls"], [], ["nonsense"]])
def test_cli_usage_errors(tmp_path: Path, args: List[str]) -> None:
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert "error:" in done.stderr and done.stdout == ""
    assert not (tmp_path / "dev").exists()


def test_cli_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    init = ["tls", "init", "dev", "--host", "a.test"]
    assert run_cli(*init, cwd=tmp_path).returncode == 0
    before = contents(tmp_path / "dev", DEV_SET)
    refused = run_cli(*init, cwd=tmp_path)
    assert refused.returncode == 1
    assert "--force" in refused.stderr and refused.stdout == ""
    assert contents(tmp_path / "dev", DEV_SET) == before
    forced = run_cli(*init, "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    after = contents(tmp_path / "dev", DEV_SET)
    assert all(after[name] != before[name] for name in DEV_SET)


def test_cli_refuses_a_directory_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "README").write_text("mine")
    done = run_cli("tls", "init", "dev", "--host", "a.test", cwd=tmp_path)
    assert done.returncode == 1 and "README" in done.stderr
    assert os.listdir(tmp_path / "dev") == ["README"]


def test_cli_version_and_help(tmp_path: Path) -> None:
    version = run_cli("--version", cwd=tmp_path)
    assert (version.returncode, version.stdout.strip()) == (0, f"syncpb {syncpb.__version__}")
    helped = run_cli("tls", "init", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--host NAME" in helped.stdout


def test_main_returns_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tls", "init", str(tmp_path / "dev"), "--host", "a.test"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["tls", "init", str(tmp_path / "dev"), "--host", "a.test"]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["tls", "init", str(tmp_path / "other")]) == 2
    assert "--host" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "COMMAND" in capsys.readouterr().out
