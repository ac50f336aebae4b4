"""Development certificates: a CA, server certificates and client certificates.

Theory
------
A TLS server proves who it is with a certificate for the names clients dial
(Subject Alternative Name: DNS names and IP addresses; the common name is
only a label), signed by a CA the client trusts. A client proves who it is
the same way, with a certificate signed by a CA the *server* trusts; its
common name is the user name (avatar id) a certificate login uses. This
module mints such a set with ``cryptography`` alone (no OpenSSL binding), in
the shape strict verifiers expect: a CA with critical BasicConstraints,
keyCertSign/cRLSign and a subject key identifier; leaves with an authority
key identifier, an extended key usage for their role and ``cA=False``.

Keys are EC P-256 by default (generated in microseconds, accepted by every
TLS stack syncpb meets); ``key_type="rsa"`` gives RSA 2048. ``not_before``
and ``not_after`` let tests mint certificates that are expired or not yet
valid. :func:`write_dev_set` writes a ready directory for development:
private keys are created with mode 0600 (the mode is set at ``open`` time,
so no byte of a key is ever readable by others) and certificates with 0644.
Keys are written unencrypted: this is development material, not a PKI.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEV_SET_FILES", "Identity", "KeyType", "check_common_name", "check_host", "common_name",
    "fingerprint_sha256", "load_identity", "make_ca", "make_client_cert", "make_server_cert",
    "subject_alt_names", "write_dev_set",
]

KeyType = Literal["ec", "rsa"]
PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
PathLike = Union[str, "os.PathLike[str]"]

#: Default common name of the CA :func:`make_ca` mints.
DEFAULT_CA_NAME = "syncpb development CA"
#: How far back a default ``not_before`` lies, for peers whose clocks run behind.
CLOCK_SKEW = datetime.timedelta(minutes=5)
RSA_BITS = 2048
#: A certificate's common name may hold at most 64 characters (RFC 5280).
MAX_COMMON_NAME = 64

#: The files :func:`write_dev_set` writes, in order, with their modes.
DEV_SET_FILES: Tuple[Tuple[str, int], ...] = (
    ("ca.pem", 0o644), ("ca.key", 0o600),
    ("server.pem", 0o644), ("server.key", 0o600),
    ("client.pem", 0o644), ("client.key", 0o600),
)
DIRECTORY_MODE = 0o700

_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key, both PEM-encoded.

    The key is left out of ``repr`` so that logging an identity never logs
    a private key.
    """

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @cached_property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)

    @cached_property
    def private_key(self) -> PrivateKey:
        """The parsed private key.

        Raises:
            ValueError: the key is not an unencrypted EC or RSA key.
        """
        return _load_private_key(self.key_pem)

    @property
    def fingerprint_sha256(self) -> str:
        """The SHA-256 fingerprint of the DER certificate, lowercase hex."""
        return fingerprint_sha256(self.certificate)

    @property
    def common_name(self) -> Optional[str]:
        """The subject's common name, or ``None`` if it has none."""
        return common_name(self.certificate)

    @property
    def subject_alt_names(self) -> List[str]:
        """The DNS names and IP addresses the certificate is for, as text."""
        return subject_alt_names(self.certificate)


# -- reading certificates ----------------------------------------------------

def fingerprint_sha256(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint of ``cert`` (of its DER form), lowercase hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def common_name(cert: x509.Certificate) -> Optional[str]:
    """The common name of ``cert``'s subject, or ``None`` if it has none."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def subject_alt_names(cert: x509.Certificate) -> List[str]:
    """The DNS names and IP addresses ``cert`` is for, as text, in order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in san if isinstance(name, (x509.DNSName, x509.IPAddress))]


# -- names and validity ------------------------------------------------------

def check_host(host: str) -> Union[str, ipaddress.IPv4Address, ipaddress.IPv6Address]:
    """A host name or IP address as a certificate names it.

    Args:
        host: a DNS name (``"pb.example"``, ``"*.pb.example"``, an
            internationalized name) or an IPv4/IPv6 address literal.

    Returns:
        The IP address, or the DNS name in lowercase ASCII (A-labels) without
        a trailing dot.

    Raises:
        ValueError: ``host`` is neither a valid IP address nor a DNS name.
    """
    if not isinstance(host, str) or not host:
        raise ValueError(f"empty or non-text host name: {host!r}")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return _check_dns_name(host)


def _check_dns_name(host: str) -> str:
    """``host`` as a lowercase A-label DNS name, or ValueError."""
    name = host[:-1] if host.endswith(".") else host
    try:
        name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"not a valid host name or IP address: {host!r}") from None
    labels = name.split(".")
    wildcard = labels[0] == "*" and len(labels) > 2
    checked = labels[1:] if wildcard else labels
    if len(name) > 253 or not all(_DNS_LABEL.match(label) for label in checked):
        raise ValueError(f"not a valid host name or IP address: {host!r}")
    if labels[-1].isdigit():
        raise ValueError(f"{host!r} looks like an IP address but is not a valid one")
    return name


def check_common_name(name: str) -> str:
    """``name`` if it can be a certificate's common name (a user name).

    Raises:
        ValueError: empty, longer than 64 characters, or not printable.
    """
    if not isinstance(name, str) or not 0 < len(name) <= MAX_COMMON_NAME:
        raise ValueError(f"a common name needs 1 to {MAX_COMMON_NAME} characters: {name!r}")
    if not name.isprintable() or name != name.strip():
        raise ValueError(f"a common name must be printable, without outer spaces: {name!r}")
    return name


def _utc(moment: datetime.datetime) -> datetime.datetime:
    """``moment`` as an aware UTC datetime (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def _validity(days: int, not_before: Optional[datetime.datetime],
              not_after: Optional[datetime.datetime]
              ) -> Tuple[datetime.datetime, datetime.datetime]:
    """The validity window: ``days`` long unless both ends are given.

    Without ``not_before`` the window starts :data:`CLOCK_SKEW` ago (or
    ``days`` before ``not_after``); without ``not_after`` it ends ``days``
    after its start.

    Raises:
        ValueError: ``days`` is not positive or the window is empty.
    """
    if days <= 0:
        raise ValueError(f"days must be positive, not {days}")
    if not_before is not None:
        start = _utc(not_before)
    elif not_after is not None:
        start = _utc(not_after) - datetime.timedelta(days=days)
    else:
        start = datetime.datetime.now(datetime.timezone.utc) - CLOCK_SKEW
    end = _utc(not_after) if not_after is not None else start + datetime.timedelta(days=days)
    if end <= start:
        raise ValueError(f"not_after ({end}) must be later than not_before ({start})")
    return start, end


# -- keys ----------------------------------------------------------------------

def _new_key(key_type: KeyType) -> PrivateKey:
    """A fresh private key: EC P-256 or RSA 2048.

    Raises:
        ValueError: an unknown ``key_type``.
    """
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    raise ValueError(f"key_type must be 'ec' or 'rsa', not {key_type!r}")


def _load_private_key(key_pem: bytes) -> PrivateKey:
    """An unencrypted PEM EC or RSA private key.

    Raises:
        ValueError: not PEM, encrypted, or another kind of key.
    """
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # the key is encrypted
        raise ValueError(f"cannot load the private key: {exc}") from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(f"unsupported private key type: {type(key).__name__}")
    return key


def _key_pem(key: PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    """Whether ``key`` is the private half of ``cert``'s public key."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


# -- minting -------------------------------------------------------------------

def _builder(subject: x509.Name, issuer: x509.Name, key: PrivateKey,
             window: Tuple[datetime.datetime, datetime.datetime]) -> x509.CertificateBuilder:
    """A builder with the parts every certificate shares, plus its SKI."""
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(window[0])
            .not_valid_after(window[1])
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False))


def _sign(builder: x509.CertificateBuilder, signer: PrivateKey, key: PrivateKey) -> Identity:
    """Sign ``builder`` with ``signer`` (SHA-256) and pair it with ``key``."""
    cert = builder.sign(signer, hashes.SHA256())
    return Identity(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _key_usage(*, digital_signature: bool = False, key_encipherment: bool = False,
               key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    """A KeyUsage with only the named bits set."""
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False,
                         key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
                         encipher_only=False, decipher_only=False)


def _common_name(name: str) -> x509.Name:
    """A subject of just ``CN=name``."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def make_ca(common_name: str = DEFAULT_CA_NAME, days: int = 3650, key_type: KeyType = "ec",
            *, not_before: Optional[datetime.datetime] = None,
            not_after: Optional[datetime.datetime] = None) -> Identity:
    """A self-signed CA that signs leaf certificates (path length 0).

    Args:
        common_name: the CA's subject (and issuer) common name.
        days: how long it is valid; see ``not_before``/``not_after``.
        key_type: ``"ec"`` (P-256) or ``"rsa"`` (2048 bits).
        not_before: start of validity (default: a few minutes ago).
        not_after: end of validity (default: ``days`` after the start).

    Returns:
        The CA certificate and its key.

    Raises:
        ValueError: a bad name, key type or validity window.
    """
    key = _new_key(key_type)
    subject = _common_name(check_common_name(common_name))
    builder = (_builder(subject, subject, key, _validity(days, not_before, not_after))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True))
    return _sign(builder, key, key)


def _issuer(ca: Identity) -> Tuple[x509.Certificate, PrivateKey]:
    """The CA's certificate and key, once checked fit to sign.

    Raises:
        ValueError: not a CA certificate, or the key is not its key.
    """
    cert, key = ca.certificate, ca.private_key
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError(f"{cert.subject.rfc4514_string()} is not a CA certificate")
    if not _same_public_key(cert, key):
        raise ValueError("the CA's private key does not belong to its certificate")
    return cert, key


def _leaf(ca: Identity, subject: x509.Name, key: PrivateKey, purpose: x509.ObjectIdentifier,
          window: Tuple[datetime.datetime, datetime.datetime]) -> x509.CertificateBuilder:
    """A builder for an end-entity certificate signed by ``ca`` for ``purpose``."""
    ca_cert, ca_key = _issuer(ca)
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:  # a CA from elsewhere, without an SKI
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    rsa_key = isinstance(key, rsa.RSAPrivateKey)
    return (_builder(subject, ca_cert.subject, key, window)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=rsa_key),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(aki, critical=False))


def _general_names(hosts: Sequence[str]) -> List[x509.GeneralName]:
    """SAN entries for ``hosts``, in order, without duplicates.

    Raises:
        TypeError: ``hosts`` is a single string rather than a sequence.
        ValueError: no hosts, or one is not a valid name or address.
    """
    if isinstance(hosts, (str, bytes)):
        raise TypeError("hosts must be a sequence of names, not a single string")
    names: List[x509.GeneralName] = []
    for host in hosts:
        checked = check_host(host)
        name: x509.GeneralName = (x509.DNSName(checked) if isinstance(checked, str)
                                  else x509.IPAddress(checked))
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("a server certificate needs at least one host name or address")
    return names


def make_server_cert(ca: Identity, hosts: Sequence[str], days: int = 825,
                     not_before: Optional[datetime.datetime] = None,
                     not_after: Optional[datetime.datetime] = None,
                     *, key_type: KeyType = "ec") -> Identity:
    """A server certificate for ``hosts``, signed by ``ca``.

    The SAN lists every host (DNS names and IP addresses); the common name
    is the first host (left out if it is longer than 64 characters, in
    which case the SAN is marked critical, as RFC 5280 asks of an empty
    subject).

    Args:
        ca: the signing CA (from :func:`make_ca` or :func:`load_identity`).
        hosts: the names and addresses clients will connect to.
        days: how long it is valid (825 is the most some clients accept).
        not_before: start of validity (default: a few minutes ago).
        not_after: end of validity (default: ``days`` after the start).
        key_type: ``"ec"`` (P-256) or ``"rsa"`` (2048 bits).

    Returns:
        The server certificate and its key.

    Raises:
        TypeError: ``hosts`` is a single string.
        ValueError: no or invalid hosts, a bad window, or ``ca`` cannot sign.
    """
    names = _general_names(hosts)
    first = str(names[0].value)
    subject = _common_name(first) if len(first) <= MAX_COMMON_NAME else x509.Name([])
    key = _new_key(key_type)
    builder = (_leaf(ca, subject, key, ExtendedKeyUsageOID.SERVER_AUTH,
                     _validity(days, not_before, not_after))
               .add_extension(x509.SubjectAlternativeName(names),
                              critical=len(subject) == 0))
    return _sign(builder, ca.private_key, key)


def make_client_cert(ca: Identity, common_name: str, days: int = 825,
                     not_before: Optional[datetime.datetime] = None,
                     not_after: Optional[datetime.datetime] = None,
                     *, key_type: KeyType = "ec") -> Identity:
    """A client certificate for user ``common_name``, signed by ``ca``.

    Args:
        ca: the signing CA; the server must trust it for client logins.
        common_name: the user name, the avatar id a certificate login uses.
        days: how long it is valid.
        not_before: start of validity (default: a few minutes ago).
        not_after: end of validity (default: ``days`` after the start).
        key_type: ``"ec"`` (P-256) or ``"rsa"`` (2048 bits).

    Returns:
        The client certificate and its key.

    Raises:
        ValueError: a bad name or window, or ``ca`` cannot sign.
    """
    subject = _common_name(check_common_name(common_name))
    key = _new_key(key_type)
    builder = _leaf(ca, subject, key, ExtendedKeyUsageOID.CLIENT_AUTH,
                    _validity(days, not_before, not_after))
    return _sign(builder, ca.private_key, key)


# -- files ---------------------------------------------------------------------

def load_identity(cert_path: PathLike, key_path: PathLike) -> Identity:
    """Read a PEM certificate and its unencrypted PEM private key.

    Args:
        cert_path: the certificate file (PEM).
        key_path: its private key file (PEM, unencrypted).

    Returns:
        The identity, checked: both parse and the key matches the certificate.

    Raises:
        OSError: a file cannot be read.
        ValueError: not PEM, an unsupported or encrypted key, or a key that
            does not belong to the certificate.
    """
    identity = Identity(Path(cert_path).read_bytes(), Path(key_path).read_bytes())
    if not _same_public_key(identity.certificate, identity.private_key):
        raise ValueError(f"{key_path} is not the private key of {cert_path}")
    return identity


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (it must not exist) with ``mode`` and write ``data``.

    The mode is given to ``open`` and re-applied to the descriptor (so a
    restrictive umask cannot change it) before any byte is written.

    Raises:
        FileExistsError: ``path`` exists.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as stream:
            fd = -1  # the stream owns it now
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        if fd != -1:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a fresh file next to ``path``, then rename it over.

    A new file, rather than truncating the old one, so the mode is the one
    asked for even if the old file's was wider.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    _write_new(temporary, data, mode)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _prepare_directory(directory: Path, force: bool) -> None:
    """Create ``directory`` (mode 0700) if missing; refuse to clobber files.

    Raises:
        NotADirectoryError: ``directory`` exists and is not a directory.
        FileExistsError: without ``force``, one of the files exists already.
    """
    if not directory.exists():
        directory.mkdir(mode=DIRECTORY_MODE, parents=True)
        return
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    present = [name for name, _ in DEV_SET_FILES if os.path.lexists(directory / name)]
    if present and not force:
        raise FileExistsError(f"{directory} already holds {', '.join(present)} "
                              f"(force=True overwrites)")


def write_dev_set(directory: PathLike, hosts: Sequence[str], client_name: str = "client",
                  force: bool = False, *, key_type: KeyType = "ec") -> Dict[str, Path]:
    """Write a development set: a CA, a server and one client certificate.

    Writes ``ca.pem``, ``ca.key``, ``server.pem``, ``server.key``,
    ``client.pem`` and ``client.key`` (see :data:`DEV_SET_FILES`); keys get
    mode 0600 from creation, certificates 0644, a missing directory 0700.
    Everything is minted before the first file is written.

    Args:
        directory: where to write (created if missing).
        hosts: the names and addresses the server certificate is for.
        client_name: the client certificate's common name (user name).
        force: overwrite existing files of the set (others are left alone).
        key_type: ``"ec"`` (P-256) or ``"rsa"`` (2048 bits), for all keys.

    Returns:
        File name (``"ca.pem"``, ...) to the path written, in writing order.

    Raises:
        FileExistsError: without ``force``, a file of the set exists.
        NotADirectoryError: ``directory`` is not a directory.
        TypeError: ``hosts`` is a single string.
        ValueError: bad hosts or client name.
    """
    ca = make_ca(key_type=key_type)
    server = make_server_cert(ca, hosts, key_type=key_type)
    client = make_client_cert(ca, client_name, key_type=key_type)
    contents = {"ca": ca, "server": server, "client": client}
    target = Path(directory)
    _prepare_directory(target, force)
    written: Dict[str, Path] = {}
    for name, mode in DEV_SET_FILES:
        stem, kind = name.split(".")
        identity = contents[stem]
        data = identity.cert_pem if kind == "pem" else identity.key_pem
        (_replace if force else _write_new)(target / name, data, mode)
        written[name] = target / name
    return written
