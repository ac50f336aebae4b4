"""Certificates for the TLS tests, minted once per session (nothing is committed).

Theory: every TLS test needs the same cast -- a CA, a server and a client it
signed -- plus certificates that must be refused for one reason each: signed
by an unrelated CA, expired, not yet valid, for another host. Minting them
takes a few milliseconds with EC keys, so the whole set is made at run time
in a temporary directory, once per session, with :mod:`syncpb.tls.certs`.

Register the fixture for all tests with one line in ``tests/conftest.py``::

    from tlscerts import tls_material  # noqa: F401

``tls_material`` (session scope) is a :class:`TLSMaterial`. Each of its
certificates is a :class:`CertFiles` with ``cert_path``/``key_path`` (PEM
files; keys mode 0600) and ``cert_pem``/``key_pem`` (the same bytes):

==========================  ====================================================
``ca``                      the trusted CA (``ca.pem``/``ca.key``)
``server``                  for ``localhost``, ``127.0.0.1``, ``::1``, ``pb.test``
``client``                  CN ``alice`` (the user a certificate login gives)
``other_ca``                an unrelated CA, ``"other CA"``
``untrusted_server``        the server's hosts, signed by ``other_ca``
``untrusted_client``        CN ``alice``, signed by ``other_ca``
``expired_server``          the server's hosts, expired a day ago
``not_yet_valid_server``    the server's hosts, valid from tomorrow
``wrong_host_server``       valid, signed by ``ca``, only for ``wrong.example``
``expired_client``          CN ``alice``, signed by ``ca``, expired a day ago
==========================  ====================================================
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
from cryptography import x509

from syncpb.tls import certs
from syncpb.tls.certs import Identity

__all__ = ["CLIENT_NAME", "CertFiles", "SERVER_HOSTS", "TLSMaterial", "WRONG_HOST",
           "mint_tls_material", "tls_material"]

SERVER_HOSTS: Tuple[str, ...] = ("localhost", "127.0.0.1", "::1", "pb.test")
CLIENT_NAME = "alice"
WRONG_HOST = "wrong.example"
OTHER_CA_NAME = "other CA"

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class CertFiles:
    """One certificate and its key: as files and as PEM bytes."""

    cert_path: Path
    key_path: Path
    identity: Identity

    @property
    def cert_pem(self) -> bytes:
        """The certificate, PEM."""
        return self.identity.cert_pem

    @property
    def key_pem(self) -> bytes:
        """The private key, PEM (unencrypted)."""
        return self.identity.key_pem

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return self.identity.certificate


@dataclass(frozen=True)
class TLSMaterial:
    """Everything the TLS tests connect with; see the module docstring."""

    directory: Path
    hosts: Tuple[str, ...]
    client_name: str
    ca: CertFiles
    server: CertFiles
    client: CertFiles
    other_ca: CertFiles
    untrusted_server: CertFiles
    untrusted_client: CertFiles
    expired_server: CertFiles
    not_yet_valid_server: CertFiles
    wrong_host_server: CertFiles
    expired_client: CertFiles


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (set at open time) holding ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)


def _save(directory: Path, stem: str, identity: Identity) -> CertFiles:
    """Write ``identity`` as ``stem.pem`` and ``stem.key`` (0600)."""
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    _write(cert_path, identity.cert_pem, 0o644)
    _write(key_path, identity.key_pem, 0o600)
    return CertFiles(cert_path, key_path, identity)


def _load(directory: Path, stem: str) -> CertFiles:
    """The ``stem.pem``/``stem.key`` pair :func:`certs.write_dev_set` wrote."""
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    return CertFiles(cert_path, key_path, certs.load_identity(cert_path, key_path))


def _invalid(directory: Path, ca: Identity, now: datetime.datetime) -> Dict[str, CertFiles]:
    """The certificates signed by the trusted CA that must still be refused."""
    past = {"not_before": now - 30 * DAY, "not_after": now - DAY}
    future = {"not_before": now + DAY, "not_after": now + 30 * DAY}
    return {
        "expired_server": _save(directory, "expired-server",
                                certs.make_server_cert(ca, SERVER_HOSTS, **past)),
        "not_yet_valid_server": _save(directory, "not-yet-valid-server",
                                      certs.make_server_cert(ca, SERVER_HOSTS, **future)),
        "wrong_host_server": _save(directory, "wrong-host-server",
                                   certs.make_server_cert(ca, [WRONG_HOST])),
        "expired_client": _save(directory, "expired-client",
                                certs.make_client_cert(ca, CLIENT_NAME, **past)),
    }


def _untrusted(directory: Path) -> Dict[str, CertFiles]:
    """An unrelated CA and a server and client certificate it signed."""
    other = certs.make_ca(OTHER_CA_NAME)
    return {
        "other_ca": _save(directory, "other-ca", other),
        "untrusted_server": _save(directory, "untrusted-server",
                                  certs.make_server_cert(other, SERVER_HOSTS)),
        "untrusted_client": _save(directory, "untrusted-client",
                                  certs.make_client_cert(other, CLIENT_NAME)),
    }


def mint_tls_material(directory: Path) -> TLSMaterial:
    """Mint and write the whole set into ``directory`` (which must be empty)."""
    certs.write_dev_set(directory, SERVER_HOSTS, client_name=CLIENT_NAME)
    ca = _load(directory, "ca")
    now = datetime.datetime.now(datetime.timezone.utc)
    return TLSMaterial(directory=directory, hosts=SERVER_HOSTS, client_name=CLIENT_NAME,
                       ca=ca, server=_load(directory, "server"),
                       client=_load(directory, "client"),
                       **_untrusted(directory), **_invalid(directory, ca.identity, now))


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    """The session's TLS certificates (see the module docstring)."""
    return mint_tls_material(tmp_path_factory.mktemp("tls"))


def shake_hands(client: Any, server: Any) -> None:
    """Complete a handshake between two in-memory TLS engines
    (:class:`syncpb.tls.engine.TLSEngine`), session tickets included."""
    for _ in range(10):
        out = client.data_to_send()
        if out:
            server.receive(out)
        back = server.data_to_send()
        if back:
            client.receive(back)
        if not out and not back:
            break
    assert client.handshake_done and server.handshake_done
    client.receive(b"")  # TLS 1.3 session tickets arrived with the last flight
