"""TLS settings: what a syncpb server or client presents and trusts.

Theory of operation
-------------------
A :class:`ServerTLS` or :class:`ClientTLS` is the *configuration* half of
syncpb's TLS layer; :class:`syncpb.tls.engine.TLSEngine` is the
*connection* half. The configuration is built once, from certificate, key
and CA sources that are either file paths or PEM bytes, into a pyOpenSSL
``SSL.Context``. Every engine takes the context that is current when the
engine is made, so:

* the same context serves every connection made from it (threads, gevent
  greenlets, TCP or unix sockets alike: nothing here knows about sockets);
* :meth:`ServerTLS.reload` (and :meth:`ClientTLS.reload`) reads the same
  sources again into a *new* context and makes it current. Connections
  made afterwards use the renewed certificate and key; connections already
  running keep the context they were made with. A reload that fails (a
  half-written file, a key that does not match) raises and leaves the
  current context in place. (pyOpenSSL freezes a context once a
  connection uses it, so renewing always means a new context.)

Both sides require TLS 1.2 or later, use AEAD cipher suites with forward
secrecy for TLS 1.2 (TLS 1.3 suites are OpenSSL's, all of them AEAD), and
disable compression and renegotiation.

Chain verification is OpenSSL's, during the handshake. OpenSSL reports a
failed handshake only as "certificate verify failed"; to say *why*, the
verify callback installed here writes the first failure it sees (X509
verify code, depth, subject) into a :class:`VerifyLog` that the engine
attaches to its connection. Host name verification is not OpenSSL's: it
is done after the handshake by :func:`check_server_name` with
``service_identity`` (DNS names and IP addresses, subjectAltName only).
A client made with ``verify=False`` checks nothing, and every engine made
from it logs a warning on the ``syncpb`` logger.

This package is the only part of syncpb that imports OpenSSL; errors of
the peer's certificate become :mod:`syncpb.errors` TLS errors here and in
the engine.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import List, Optional, Union

import service_identity
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from OpenSSL import SSL, crypto
from service_identity.pyopenssl import verify_hostname, verify_ip_address

from syncpb.errors import HostnameMismatch

__all__ = [
    "Source",
    "ServerTLS",
    "ClientTLS",
    "VerifyFailure",
    "VerifyLog",
    "server_context",
    "client_context",
    "check_server_name",
    "is_ip_address",
]

#: A certificate, key or CA source: a file path, or the PEM text as bytes.
Source = Union[str, "os.PathLike[str]", bytes]

#: The private key types a TLS certificate can be used with.
TLSPrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, dsa.DSAPrivateKey,
                      ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey]

# TLS 1.2 suites: ECDHE/DHE key exchange (forward secrecy), AEAD ciphers only.
_TLS12_CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"

_OPTIONS = SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | getattr(
    SSL, "OP_NO_RENEGOTIATION", 0
)


# ----------------------------------------------------------------- loading


def _describe(source: Source) -> str:
    """Name a source for an error message without dumping PEM text."""
    if isinstance(source, bytes):
        return "the PEM bytes given"
    return repr(os.fspath(source))


def _read(source: Source) -> bytes:
    """Return the bytes of a source (a path is read now).

    Raises:
        OSError: the file cannot be read.
    """
    if isinstance(source, bytes):
        return source
    with open(os.fspath(source), "rb") as stream:
        return stream.read()


def _load_certificates(source: Source, what: str) -> List[x509.Certificate]:
    """Parse every PEM certificate in ``source``, in order.

    Raises:
        ValueError: no certificate could be parsed.
        OSError: the file cannot be read.
    """
    try:
        certificates = x509.load_pem_x509_certificates(_read(source))
    except ValueError as error:
        raise ValueError(f"{what}: no PEM certificate in {_describe(source)}") from error
    return certificates


def _load_private_key(source: Source) -> TLSPrivateKey:
    """Parse the (unencrypted) PEM private key in ``source``.

    Raises:
        ValueError: no key could be parsed, it is encrypted, or TLS cannot
            sign with its type.
        OSError: the file cannot be read.
    """
    try:
        key = serialization.load_pem_private_key(_read(source), password=None)
    except TypeError as error:  # encrypted key and no password
        raise ValueError(f"key: {_describe(source)} is encrypted; "
                         "give an unencrypted key") from error
    except ValueError as error:
        raise ValueError(f"key: no usable PEM private key in {_describe(source)}") from error
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, dsa.DSAPrivateKey,
                            ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise ValueError(f"key: {_describe(source)} holds a {type(key).__name__}, "
                         "which TLS cannot sign with")
    return key


# ----------------------------------------------------------------- verification log


@dataclass(frozen=True)
class VerifyFailure:
    """The first certificate OpenSSL refused while verifying a peer's chain.

    Attributes:
        code: the X509 verify error code (``X509_V_ERR_*``), e.g. 10 = expired.
        depth: the certificate's place in the chain (0 = the peer's own).
        subject: the refused certificate's subject (RFC 4514).
    """

    code: int
    depth: int
    subject: str


@dataclass
class VerifyLog:
    """Where the verify callback notes a connection's first chain failure.

    An engine attaches one to its ``SSL.Connection`` as app data.
    """

    failure: Optional[VerifyFailure] = field(default=None)


def _note_verify_result(connection: SSL.Connection, certificate: crypto.X509,
                        code: int, depth: int, ok: int) -> bool:
    """OpenSSL's verify callback: keep OpenSSL's verdict, note the first refusal.

    Returns:
        OpenSSL's own verdict, unchanged.
    """
    log = connection.get_app_data()
    if not ok and isinstance(log, VerifyLog) and log.failure is None:
        subject = certificate.to_cryptography().subject.rfc4514_string()
        log.failure = VerifyFailure(code, depth, subject)
    return bool(ok)


# ----------------------------------------------------------------- contexts


def _base_context() -> SSL.Context:
    """A context with syncpb's protocol floor, ciphers and options."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(_OPTIONS)
    context.set_cipher_list(_TLS12_CIPHERS)
    return context


def _use_identity(context: SSL.Context, cert: Source, key: Source) -> None:
    """Install a certificate (leaf first, then its chain) and its key.

    Raises:
        ValueError: unreadable PEM, or the key does not match the certificate.
    """
    leaf, *chain = _load_certificates(cert, "cert")
    context.use_certificate(leaf)
    for extra in chain:
        context.add_extra_chain_cert(extra)
    private_key = _load_private_key(key)
    try:
        context.use_privatekey(private_key)
        context.check_privatekey()
    except SSL.Error as error:
        raise ValueError(f"key {_describe(key)} does not match "
                         f"certificate {_describe(cert)}") from error


def _trust(context: SSL.Context, ca: Source, send_names: bool) -> None:
    """Trust the CA certificates in ``ca`` (and name them to clients if asked).

    Raises:
        ValueError: no certificate in ``ca``.
    """
    store = context.get_cert_store()
    assert store is not None  # a fresh SSL.Context always has a store
    for certificate in _load_certificates(ca, "ca"):
        store.add_cert(crypto.X509.from_cryptography(certificate))
        if send_names:
            context.add_client_ca(certificate)


class _Settings:
    """What server and client settings share: a current context, rebuilt
    from the same sources by :meth:`reload`."""

    _context: SSL.Context

    @property
    def context(self) -> SSL.Context:
        """The current context; new connections are made from it."""
        return self._context

    def reload(self) -> SSL.Context:
        """Read the sources again into a new context.

        New connections use the new context; running ones keep theirs.

        Returns:
            The new (now current) context.

        Raises:
            ValueError: a source no longer parses, or key and certificate
                do not match; the current context is kept.
            OSError: a file cannot be read; the current context is kept.
        """
        context = self._build()
        self._context = context
        return context

    def _build(self) -> SSL.Context:
        raise NotImplementedError


class ServerTLS(_Settings):
    """A server's TLS settings; see :func:`server_context`.

    Attributes:
        requests_client_cert: clients are asked for a certificate.
        requires_client_cert: a client without a valid certificate is refused.
    """

    def __init__(self, cert: Source, key: Source, ca: Optional[Source] = None,
                 require_client_cert: bool = False,
                 request_client_cert: Optional[bool] = None) -> None:
        """Load the sources into the first context (arguments as :func:`server_context`).

        Raises:
            ValueError: a source does not parse, key and certificate do not
                match, or the options contradict each other.
            OSError: a file cannot be read.
        """
        if request_client_cert is None:
            request_client_cert = ca is not None or require_client_cert
        if require_client_cert and not request_client_cert:
            raise ValueError("require_client_cert=True contradicts request_client_cert=False")
        if request_client_cert and ca is None:
            raise ValueError("checking client certificates needs ca= (the CA that signs them)")
        self._cert, self._key, self._ca = cert, key, ca
        self.requests_client_cert = request_client_cert
        self.requires_client_cert = require_client_cert
        self._context = self._build()

    def _build(self) -> SSL.Context:
        """Make a context from the sources."""
        context = _base_context()
        _use_identity(context, self._cert, self._key)
        if self._ca is not None and self.requests_client_cert:
            _trust(context, self._ca, send_names=True)
            mode = SSL.VERIFY_PEER
            if self.requires_client_cert:
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            context.set_verify(mode, _note_verify_result)
        return context


class ClientTLS(_Settings):
    """A client's TLS settings; see :func:`client_context`.

    Attributes:
        server_hostname: the name to check the server's certificate against
            (and to send as SNI) instead of the host connected to, or None.
        verify: the server's certificate is verified (chain and name).
        has_client_cert: a client certificate is presented when asked.
    """

    def __init__(self, ca: Optional[Source] = None, cert: Optional[Source] = None,
                 key: Optional[Source] = None, server_hostname: Optional[str] = None,
                 verify: bool = True) -> None:
        """Load the sources into the first context (arguments as :func:`client_context`).

        Raises:
            ValueError: a source does not parse, key and certificate do not
                match, or a key is given without a certificate.
            OSError: a file cannot be read.
        """
        if key is not None and cert is None:
            raise ValueError("key= given without cert=")
        self._ca, self._cert, self._key = ca, cert, key
        self.server_hostname = server_hostname
        self.verify = verify
        self.has_client_cert = cert is not None
        self._context = self._build()

    def _build(self) -> SSL.Context:
        """Make a context from the sources."""
        context = _base_context()
        if self._cert is not None:
            key = self._key if self._key is not None else self._cert
            _use_identity(context, self._cert, key)
        if not self.verify:
            context.set_verify(SSL.VERIFY_NONE)
            return context
        if self._ca is not None:
            _trust(context, self._ca, send_names=False)
        else:
            context.set_default_verify_paths()
        context.set_verify(SSL.VERIFY_PEER, _note_verify_result)
        return context


def server_context(cert: Source, key: Source, ca: Optional[Source] = None,
                   require_client_cert: bool = False,
                   request_client_cert: Optional[bool] = None) -> ServerTLS:
    """Build a server's TLS settings.

    Args:
        cert: the server certificate (PEM; the leaf first, then any
            intermediates), as a path or bytes.
        key: its unencrypted PEM private key, as a path or bytes.
        ca: the CA certificate(s) client certificates must chain to. When
            given, clients are asked for a certificate (and one they send
            must verify), unless ``request_client_cert=False``.
        require_client_cert: refuse clients that send no certificate.
        request_client_cert: ask clients for a certificate; the default is
            to ask exactly when ``ca`` is given.

    Returns:
        The settings; pass them to :class:`~syncpb.tls.engine.TLSEngine`.

    Raises:
        ValueError: a source does not parse, key and certificate do not
            match, or the options contradict each other.
        OSError: a file cannot be read.
    """
    return ServerTLS(cert, key, ca, require_client_cert, request_client_cert)


def client_context(ca: Optional[Source] = None, cert: Optional[Source] = None,
                   key: Optional[Source] = None, server_hostname: Optional[str] = None,
                   verify: bool = True) -> ClientTLS:
    """Build a client's TLS settings.

    Args:
        ca: the CA certificate(s) the server's certificate must chain to;
            the system's trust store when None.
        cert: a client certificate to present when the server asks (path
            or PEM bytes, leaf first).
        key: its unencrypted private key; when None, it is read from
            ``cert`` (a combined PEM file).
        server_hostname: check the server's certificate against this name
            (and send it as SNI) instead of the host connected to; needed
            for unix sockets, which have no host.
        verify: verify the server's certificate. ``False`` accepts any
            server, logging a warning for every connection.

    Returns:
        The settings; pass them to :class:`~syncpb.tls.engine.TLSEngine`.

    Raises:
        ValueError: a source does not parse or key and certificate do not match.
        OSError: a file cannot be read.
    """
    return ClientTLS(ca, cert, key, server_hostname, verify)


# ----------------------------------------------------------------- host names


def is_ip_address(name: str) -> bool:
    """Tell whether ``name`` is an IPv4 or IPv6 address rather than a DNS name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _names_in(certificate: Optional[x509.Certificate]) -> str:
    """List the names a certificate is valid for, for an error message."""
    if certificate is None:
        return "(no certificate)"
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return "(no subjectAltName; subject " + certificate.subject.rfc4514_string() + ")"
    names: List[str] = list(san.value.get_values_for_type(x509.DNSName))
    names += [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)]
    return ", ".join(names) or "(no DNS or IP subjectAltName)"


def check_server_name(connection: SSL.Connection, expected: str) -> None:
    """Check that the server's certificate is valid for ``expected``.

    IP addresses are matched against IP subjectAltNames, anything else
    against DNS subjectAltNames (wildcards as RFC 6125 allows); the common
    name is never used.

    Args:
        connection: a client connection whose handshake is complete.
        expected: the host name or IP address connected to.

    Raises:
        HostnameMismatch: the certificate is not valid for ``expected``;
            the message names both. The ``service_identity`` error is
            ``__cause__``.
    """
    try:
        if is_ip_address(expected):
            verify_ip_address(connection, expected)
        else:
            verify_hostname(connection, expected)
    except (service_identity.VerificationError, service_identity.CertificateError) as error:
        names = _names_in(connection.get_peer_certificate(as_cryptography=True))
        raise HostnameMismatch(
            f"the server's certificate is valid for {names}, not for {expected!r}"
        ) from error
