"""A sans-IO TLS connection: ciphertext in, plaintext out, and back.

Theory of operation
-------------------
:class:`TLSEngine` drives one pyOpenSSL ``SSL.Connection`` whose socket is
replaced by a pair of memory BIOs. The engine never reads or writes a
socket, never waits and never starts a thread; whoever owns the byte
stream (the threaded client's socket, a gevent server greenlet, a unix
socket, a test pumping two engines into each other) moves the bytes:

* ``receive(ciphertext)`` writes into the incoming BIO, advances the
  handshake as far as the bytes allow, then reads out every plaintext byte
  that is complete. Input may come whole, a byte at a time, or with
  application data in the same chunk as the handshake's last message (that
  plaintext comes out of the same call).
* ``send(plaintext)`` queues application data; the queue is encrypted as
  soon as the handshake is complete (so sending early is allowed).
* ``data_to_send()`` drains the outgoing BIO: handshake messages, records,
  alerts, close_notify. Call it after every other method and write what it
  returns, *also after an error*: it then holds the alert that tells the
  peer why the connection failed.

An engine holds no lock: the one thread or greenlet that owns the stream
uses it. Contexts, on the other hand, are shared by every engine.

A client engine writes its first flight (ClientHello) when it is made. When
the handshake completes the client checks the server's name (see
:func:`syncpb.tls.context.check_server_name`), records the peer's
certificate and only then encrypts what was queued, so nothing is sent to
a server that turned out to be the wrong one.

Errors. Any OpenSSL failure becomes a :class:`~syncpb.errors.TLSError`
subclass (the OpenSSL error is ``__cause__``) and the engine is then
failed: later calls raise the same error again. The mapping uses the
reason strings of OpenSSL's error queue and the X509 verify code noted by
the context's verify callback (``VerifyLog``): expired or not-yet-valid ->
:class:`CertificateExpired`; unknown issuer or self-signed ->
:class:`CertificateUntrusted`; a server missing a required client
certificate -> :class:`ClientCertificateRequired`; bytes that are not TLS
records at all (a plain PB server's greeting) -> :class:`NotTLSPeer`. A
client whose server's certificate is for another name raises
:class:`HostnameMismatch` and queues close_notify (the name is checked
after the handshake, when no alert can say why any more). A client that
receives a handshake_failure alert *after* the ServerHello takes it as the
TLS 1.2 way of refusing a client certificate; before it, the alert means
"nothing in common" and stays a plain :class:`TLSError`.

Client certificates and TLS 1.3. In TLS 1.2 the server checks the client's
certificate before sending its Finished, so a refused client sees a
handshake_failure (or certificate) alert while its handshake is still
running. In TLS 1.3 the client sends Certificate and Finished *last*: its
handshake is complete, and ``handshake_done`` is True, before the server
has looked at its certificate. The server's refusal (alert 116,
certificate_required, or a certificate alert) therefore reaches the client
on a later ``receive()``, which raises :class:`ClientCertificateRequired`
then. Any data the client sent meanwhile is discarded by the server.
Callers that must know the server accepted them should wait for the first
application data from the server (PB's greeting) before trusting the link.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, Type, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from syncpb.errors import (CertificateExpired, CertificateUntrusted,
                           ClientCertificateRequired, HostnameMismatch, NotTLSPeer, TLSError)

from . import direct
from .context import (ClientTLS, ServerTLS, VerifyFailure, VerifyLog, check_server_name,
                      is_ip_address)

__all__ = ["TLSEngine", "PeerCertificate"]

log = logging.getLogger("syncpb")

_CHUNK = 65536

# Reasons (OpenSSL error-queue strings) meaning "the peer does not speak TLS".
# Only reasons that mean "the first bytes are not a TLS record header at all":
# a TLS-shaped record with a bad body is a broken TLS peer, not a plain one.
_NOT_TLS = ("wrong version number", "unknown protocol", "http request",
            "https proxy request", "packet length too long")

# Reasons meaning "no protocol version in common".
_VERSION = ("unsupported protocol", "alert protocol version", "no protocols available")

# Alerts a client receives when the server refuses its certificate (or its lack of one).
_CLIENT_CERT_ALERTS = ("alert certificate required", "alert unknown ca",
                       "alert bad certificate", "alert certificate expired",
                       "alert certificate unknown", "alert unsupported certificate",
                       "alert certificate revoked", "alert access denied")

# X509 verify codes (X509_V_ERR_*) with their meaning.
_EXPIRED_CODES = {9: "is not yet valid", 10: "has expired"}
_UNTRUSTED_CODES = {
    2: "was issued by an unknown CA (unable to get issuer certificate)",
    18: "is self-signed",
    19: "chains to a self-signed certificate that is not trusted",
    20: "was issued by an unknown CA (unable to get local issuer certificate)",
    21: "cannot be verified (unable to verify the first certificate)",
}


@dataclass(frozen=True)
class PeerCertificate:
    """What the peer's certificate says about it.

    Attributes:
        common_name: the subject's CN, or None if it has none.
        subject: the full subject, RFC 4514 (``CN=alice,O=Example``).
        fingerprint_sha256: SHA-256 of the DER certificate, lowercase hex.
    """

    common_name: Optional[str]
    subject: str
    fingerprint_sha256: str

    @classmethod
    def of(cls, certificate: x509.Certificate) -> "PeerCertificate":
        """Describe a ``cryptography`` certificate."""
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(names[0].value) if names else None
        return cls(common_name, certificate.subject.rfc4514_string(),
                   certificate.fingerprint(hashes.SHA256()).hex())


class TLSEngine:
    """One TLS connection over memory buffers (sans-IO); see the module doc.

    Attributes:
        server_side: this end accepted the connection.
    """

    def __init__(self, tls: Union[ServerTLS, ClientTLS], server_side: bool,
                 server_hostname: Optional[str] = None) -> None:
        """Start a connection.

        Args:
            tls: the settings, from :func:`~syncpb.tls.context.server_context`
                (``server_side=True``) or :func:`~syncpb.tls.context.client_context`.
            server_side: this end accepted the connection.
            server_hostname: (client) the host connected to: the name the
                server's certificate must be valid for, also sent as SNI.
                ``tls.server_hostname`` overrides it.

        Raises:
            ValueError: the settings are for the other side, or a client
                that verifies has no host name to verify.
            TLSError: (client) OpenSSL cannot even write a ClientHello.
        """
        if server_side != isinstance(tls, ServerTLS):
            raise ValueError(f"{type(tls).__name__} settings cannot make a "
                             f"{'server' if server_side else 'client'} engine")
        self.server_side = server_side
        self._connection = SSL.Connection(tls.context, None)
        self._direct = direct.bind(self._connection)
        # The C record path, when built: the steady state calls it straight.
        self._records: Optional[direct.Records] = getattr(self._direct, "records", None)
        self._verify_log = VerifyLog()
        self._connection.set_app_data(self._verify_log)
        self._queued: List[memoryview] = []
        self._handshake_done = False
        self._closed_by_peer = False
        self._closing = False
        self._close_notify_sent = False
        self._error: Optional[TLSError] = None
        self._peer: Optional[PeerCertificate] = None
        self._expected_name: Optional[str] = None
        self._has_client_cert = False
        if isinstance(tls, ServerTLS):
            self._verifies_peer = tls.requests_client_cert
            self._connection.set_accept_state()
        else:
            self._start_client(tls, server_hostname)

    def _start_client(self, tls: ClientTLS, server_hostname: Optional[str]) -> None:
        """Set up name checks and SNI, then write the ClientHello."""
        name = tls.server_hostname or server_hostname
        if tls.verify and not name:
            raise ValueError("verifying the server needs its name: pass server_hostname "
                             "(to TLSEngine or client_context)")
        self._verifies_peer = tls.verify
        self._expected_name = name if tls.verify else None
        self._has_client_cert = tls.has_client_cert
        if name and not is_ip_address(name):
            self._connection.set_tlsext_host_name(name.encode("idna"))
        if not tls.verify:
            log.warning("TLS: certificate verification is DISABLED for this connection "
                        "(server %s): anyone on the network path can impersonate the "
                        "server and read everything", name or "(no name)")
        self._connection.set_connect_state()
        self._guarded(self._advance_handshake)

    # ------------------------------------------------------------ public state

    @property
    def handshake_done(self) -> bool:
        """The handshake completed (and, on a client, the server's name checked)."""
        return self._handshake_done

    @property
    def closed_by_peer(self) -> bool:
        """The peer sent close_notify: it will send no more data."""
        return self._closed_by_peer

    @property
    def peer_certificate(self) -> Optional[PeerCertificate]:
        """The peer's certificate after the handshake; None before or if it sent none."""
        return self._peer

    @property
    def verified(self) -> bool:
        """The peer's certificate was verified: chain (and, on a client, name).

        False before the handshake completes, on a client with
        ``verify=False``, and on a server whose client sent no certificate
        or that does not ask for one.
        """
        return self._handshake_done and self._verifies_peer and self._peer is not None

    @property
    def protocol(self) -> Optional[str]:
        """The negotiated version (``"TLSv1.3"``), None before the handshake."""
        if not self._handshake_done:
            return None
        return self._connection.get_protocol_version_name()

    # ------------------------------------------------------------ byte flow

    def receive(self, data: Union[bytes, memoryview]) -> bytes:
        """Take ciphertext from the network.

        Args:
            data: bytes as they arrived, any amount (b"" just retries).

        Returns:
            The plaintext that became available, possibly b"".

        Raises:
            TLSError: (a subclass of) the handshake failed or a record was
                bad; see the module doc. Flush :meth:`data_to_send` after it.
        """
        if not self._handshake_done or self._queued or self._closing or self._error:
            self._raise_if_failed()
            if data:
                self._connection.bio_write(data)
            return self._guarded(self._process)
        # The steady state (handshake done, nothing waiting), written out.
        if self._records is not None:
            plain, status, result = self._records.receive(data)
            if status == direct.WANT_MORE:
                return plain
            return self.finish_receive(plain, status, result)
        chunks: List[bytes] = []
        try:
            if self._direct is not None:
                plain, self._closed_by_peer = self._direct.receive(data)
                return plain
            if data:
                self._connection.bio_write(data)
            while True:
                chunks.append(self._connection.recv(_CHUNK))
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self._closed_by_peer = True
        except SSL.Error as error:
            self._error = self._classify(error)
            raise self._error from error
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def encrypt(self, plaintext: Union[bytes, memoryview]) -> bytes:
        """:meth:`send` then :meth:`data_to_send`: the ciphertext to write now.

        Raises:
            TLSError: the engine already failed.
            ValueError: :meth:`close` was called.
        """
        if self._direct is not None and self._handshake_done and plaintext \
                and not (self._queued or self._closing or self._error):
            if self._records is not None:  # the usual case, in one call into C
                written, cipher, result = self._records.seal(plaintext)
                if cipher is not None and written == len(plaintext):
                    return cipher
                return self.finish_seal(plaintext, written, cipher, result)
            try:  # the usual case: one record straight in, and out again
                written, cipher = self._direct.seal(plaintext)
            except SSL.WantReadError:  # a key update: the peer must speak first
                written, cipher = 0, b""
            except SSL.Error as error:
                self._error = self._classify(error)
                raise self._error from error
            if written == len(plaintext):
                return cipher
            self.send(memoryview(plaintext)[written:])
            return cipher + self.data_to_send()
        self.send(plaintext)
        return self.data_to_send()

    @property
    def records(self) -> Optional[direct.Records]:
        """The C record path (``syncpb.tls._records.Records``) while the
        engine is in its steady state (handshake done, nothing queued, not
        closing, not failed), else None. A stream may then move bytes
        between its socket and OpenSSL in one call (``recv_from``,
        ``send_to``); an outcome other than the healthy one goes to
        :meth:`finish_receive` or :meth:`finish_seal`."""
        if self._handshake_done and not (self._queued or self._closing or self._error):
            return self._records
        return None

    def finish_receive(self, plain: bytes, status: int, result: int) -> bytes:
        """A C receive step ended other than wanting more data: the peer's
        close_notify, or a failure (raised as :meth:`receive` would)."""
        if status == direct.CLOSED:
            self._closed_by_peer = True
            return plain
        try:
            self._direct.fail(result)  # type: ignore[union-attr]
        except SSL.Error as error:
            self._error = self._classify(error)
            raise self._error from error
        return plain  # pragma: no cover - fail() always raises

    def finish_seal(self, plaintext: Union[bytes, memoryview], written: int,
                    cipher: Optional[bytes], result: int) -> bytes:
        """A C seal step took ``written`` bytes of ``plaintext`` only: the
        ciphertext to write now, as :meth:`encrypt` returns it."""
        if cipher is None:
            try:
                self._direct.fail(result)  # type: ignore[union-attr]
            except SSL.WantReadError:  # a key update: the peer must speak first
                cipher = b""
            except SSL.Error as error:
                self._error = self._classify(error)
                raise self._error from error
        self.send(memoryview(plaintext)[written:])
        return (cipher or b"") + self.data_to_send()

    def send(self, plaintext: Union[bytes, memoryview]) -> None:
        """Queue application data; it is encrypted once the handshake is done.

        Raises:
            TLSError: the engine already failed.
            ValueError: :meth:`close` was called.
        """
        if self._handshake_done and not (self._queued or self._closing or self._error) \
                and plaintext:
            try:  # the usual case, written out: one record straight into the BIO
                if self._direct is not None:
                    written = self._direct.send(plaintext)
                else:
                    written = self._connection.send(plaintext)
            except SSL.WantReadError:  # a key update: the peer must speak first
                written = 0
            except SSL.Error as error:
                self._error = self._classify(error)
                raise self._error from error
            if written == len(plaintext):
                return
            plaintext = memoryview(plaintext)[written:]
        self._raise_if_failed()
        if self._closing:
            raise ValueError("send() after close()")
        if plaintext:
            self._queued.append(memoryview(bytes(plaintext)))
            if self._handshake_done:
                self._guarded(self._write_out)

    def data_to_send(self) -> bytes:
        """Return (and forget) the ciphertext waiting to be written to the network.

        Never raises: after a failure it returns the alert for the peer.
        """
        if self._direct is not None:
            return self._direct.data_to_send()
        chunks = []
        while True:
            try:
                chunk = self._connection.bio_read(_CHUNK)
            except SSL.WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < _CHUNK:  # a memory BIO hands over all it has: drained
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        """Queue close_notify, after any data already queued.

        Before the handshake completes, close_notify follows its end. Does
        nothing after a failure or a second time.
        """
        if self._closing or self._error is not None:
            return
        self._closing = True
        if self._handshake_done:
            self._guarded(self._write_out)

    def receive_eof(self) -> bool:
        """Tell the engine the byte stream ended.

        Returns:
            True when the peer closed cleanly (sent close_notify first).

        Raises:
            TLSError: the stream ended during the handshake.
        """
        self._raise_if_failed()
        if not self._handshake_done:
            self._error = TLSError("the peer closed the connection during the TLS handshake")
            raise self._error
        return self._closed_by_peer

    # ------------------------------------------------------------ internals

    def _guarded(self, step: Callable[[], Optional[bytes]]) -> bytes:
        """Run ``step``; turn OpenSSL errors into TLS errors and remember them."""
        try:
            return step() or b""
        except SSL.Error as error:
            self._error = self._classify(error)
            raise self._error from error
        except TLSError as error:
            self._error = error
            raise

    def _raise_if_failed(self) -> None:
        """Raise the error the engine failed with, if any."""
        if self._error is not None:
            raise self._error

    def _process(self) -> bytes:
        """Advance the handshake, then read all available plaintext."""
        if not self._handshake_done:
            self._advance_handshake()
        if not self._handshake_done:
            return b""
        plaintext = self._read_plaintext()
        if self._queued or (self._closing and not self._close_notify_sent):
            self._write_out()  # what a key update held back
        return plaintext

    def _advance_handshake(self) -> None:
        """Run the handshake as far as the input allows; finish it if it ends."""
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            return
        if self._expected_name is not None:
            self._check_name(self._expected_name)
        certificate = self._connection.get_peer_certificate(as_cryptography=True)
        self._peer = PeerCertificate.of(certificate) if certificate is not None else None
        self._handshake_done = True
        self._write_out()

    def _check_name(self, expected: str) -> None:
        """(Client) check the server's name; on a mismatch, say goodbye first.

        The handshake is complete on both ends by now (the name is checked
        after it), so close_notify tells the server the client is leaving.
        """
        try:
            check_server_name(self._connection, expected)
        except HostnameMismatch:
            self._connection.shutdown()
            raise

    def _read_plaintext(self) -> bytes:
        """Decrypt every complete record; note close_notify."""
        chunks = []
        while not self._closed_by_peer:
            try:
                chunks.append(self._connection.recv(_CHUNK))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._closed_by_peer = True
        return b"".join(chunks)

    def _write_out(self) -> None:
        """Encrypt the queue, then close_notify if :meth:`close` was called."""
        self._flush()
        if self._closing and not self._queued and not self._close_notify_sent:
            self._close_notify_sent = True
            self._connection.shutdown()

    def _flush(self) -> None:
        """Encrypt queued plaintext (a record at a time) into the outgoing BIO."""
        while self._queued:
            head = self._queued[0]
            try:
                written = self._connection.send(head)
            except SSL.WantReadError:  # the peer must speak first (key update)
                return
            if written < len(head):
                self._queued[0] = head[written:]
            else:
                self._queued.pop(0)

    # ------------------------------------------------------------ error mapping

    def _classify(self, error: SSL.Error) -> TLSError:
        """Turn an OpenSSL error into the TLS error that says why."""
        reasons = _reasons(error)
        text = "; ".join(reasons) or type(error).__name__
        failure = self._verify_log.failure
        if failure is not None and _has(reasons, "certificate verify failed"):
            return _verify_error(failure, "client" if self.server_side else "server")
        kind, message = self._classify_reason(reasons)
        return kind(f"{message} (OpenSSL: {text})")

    def _classify_reason(self, reasons: List[str]) -> Tuple[Type[TLSError], str]:
        """Pick the error class and its message from OpenSSL's reasons."""
        if _has(reasons, "peer did not return a certificate"):
            return ClientCertificateRequired, "the client sent no certificate and one is required"
        if not self.server_side and self._server_refused_our_certificate(reasons):
            return ClientCertificateRequired, self._refusal_message()
        if self.server_side and _has(reasons, *_CLIENT_CERT_ALERTS):
            return TLSError, "the client refused this server's certificate"
        if _has(reasons, *_VERSION):
            return TLSError, "no TLS version in common (syncpb requires TLS 1.2 or later)"
        if not self._handshake_done and _has(reasons, *_NOT_TLS):
            return NotTLSPeer, "the peer does not speak TLS (is it a plain, non-TLS port?)"
        if _has(reasons, "certificate verify failed"):
            return CertificateUntrusted, "the peer's certificate could not be verified"
        stage = "after" if self._handshake_done else "during"
        return TLSError, f"TLS failed {stage} the handshake"

    def _server_refused_our_certificate(self, reasons: List[str]) -> bool:
        """(Client) the server's alert says it refused our certificate, or its absence.

        A handshake_failure alert counts only after the ServerHello (a
        cipher was chosen): earlier it means "no cipher in common"; later,
        the only thing left for the server to refuse is the client's
        certificate (TLS 1.2 servers send it for a missing one).
        """
        if _has(reasons, *_CLIENT_CERT_ALERTS):
            return True
        return (_has(reasons, "alert handshake failure")
                and self._connection.get_cipher_name() is not None)

    def _refusal_message(self) -> str:
        """The message for a server that refused the client's certificate."""
        if self._has_client_cert:
            return "the server refused our client certificate"
        return "the server requires a client certificate and we have none"



def _reasons(error: SSL.Error) -> List[str]:
    """The reason strings in an OpenSSL error (lowercase)."""
    queue = error.args[0] if error.args else None
    if isinstance(queue, list):
        return [str(item[-1]).lower() for item in queue if isinstance(item, tuple) and item]
    return [str(error).lower()] if str(error) else []


def _has(reasons: List[str], *needles: str) -> bool:
    """Tell whether any reason contains any of ``needles``."""
    return any(needle in reason for reason in reasons for needle in needles)


def _verify_error(failure: VerifyFailure, whose: str) -> TLSError:
    """The error for a certificate chain OpenSSL refused."""
    where = "" if failure.depth == 0 else f" (its issuer at depth {failure.depth})"
    if failure.code in _EXPIRED_CODES:
        kind: Type[TLSError] = CertificateExpired
        meaning = _EXPIRED_CODES[failure.code]
    elif failure.code in _UNTRUSTED_CODES:
        kind, meaning = CertificateUntrusted, _UNTRUSTED_CODES[failure.code]
    else:
        kind, meaning = CertificateUntrusted, "failed verification"
    return kind(f"the {whose}'s certificate{where} {meaning}: {failure.subject} "
                f"(X509 verify error {failure.code})")
