"""TLS over any connected stream: the handshake, then a stream sessions can use.

Theory of operation
-------------------
:class:`~syncpb.tls.engine.TLSEngine` is sans-IO: ciphertext in, plaintext
out. This module is its I/O edge, over any socket-like stream (a TCP or
unix socket, the standard library's or gevent's):

* :func:`handshake` drives the engine over the stream until the TLS
  handshake is done, within a deadline, and returns any application data
  that came with the last flight (the peer's first PB bytes), for the
  caller to feed to its session. The stream's own blocking decides who
  waits: a thread on a plain socket, only the greenlet on gevent's.
* :class:`TLSStream` then meets the transport contract of
  :mod:`syncpb.transport`: ``recv`` returns the plaintext a read yielded
  (``BlockingIOError`` when a record carried none, such as a TLS 1.3
  session ticket), ``send`` encrypts everything it is given and writes
  what the socket takes (``MSG_DONTWAIT``) or all of it; ciphertext not yet
  written waits in :attr:`TLSStream.backlog` and goes first next time.

On gevent, with the compiled record path built, a read is one call into
C (``Records.recv_from``: a non-blocking read of the socket straight into
OpenSSL, then every complete record decrypted), and only when nothing was
there does the greenlet wait on the hub until the socket is readable. A
write is one call too (``Records.send_to``: encrypt, then a non-blocking
write; what the socket did not take waits in the backlog). Elsewhere the
stream reads and writes in Python and hands the bytes to the engine.

The engine (one OpenSSL connection) is used by a reading and a writing
thread at once, so every engine call holds a lock, never across a wait
(the C steps' socket calls never block). The session guarantees one
writer at a time, so writes of the backlog need no lock of their own.
Errors after the handshake reach the session as ``OSError``
(:class:`TLSStreamError`) with the TLS error kept on it, so the connection
ends as for any broken stream, and a client can still tell the user why (a server that refused our certificate says so only after a TLS
1.3 handshake seemed complete).
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
import time
from typing import Any, Optional

from syncpb.errors import ConnectionFailed, TLSError
from syncpb.transport import read_buffer, wait_readable
from syncpb.waiting import real

from . import direct
from .engine import PeerCertificate, TLSEngine

__all__ = ["TLSStream", "TLSStreamError", "handshake"]

_HANDSHAKE_READ = 65536
_DONTWAIT = int(stdlib_socket.MSG_DONTWAIT)  # an int: IntFlag arithmetic costs a microsecond
_WANT_MORE, _AGAIN, _END = direct.WANT_MORE, direct.AGAIN, direct.END
_allocate_lock = real("_thread", "allocate_lock")


class HandshakeTimeout(ConnectionFailed):
    """The TLS handshake did not complete in the time allowed."""


class TLSStreamError(OSError):
    """A TLS failure after the handshake, as the stream error sessions expect.

    Attributes:
        tls_error: the :class:`~syncpb.errors.TLSError` that caused it.
    """

    def __init__(self, tls_error: TLSError) -> None:
        super().__init__(str(tls_error))
        self.tls_error = tls_error


def handshake(sock: Any, engine: TLSEngine, timeout: Optional[float]) -> bytes:
    """Complete the TLS handshake on ``sock`` within ``timeout`` seconds.

    Returns:
        Application data that arrived with the handshake's last flight.

    Raises:
        TLSError: (a subclass) the handshake failed; the alert telling the
            peer why has been sent.
        ConnectionFailed: the stream failed, ended, or the time ran out.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    early = b""
    try:
        while not engine.handshake_done:
            _send_pending(sock, engine)
            sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.001))
            data = sock.recv(_HANDSHAKE_READ)
            if not data:
                engine.receive_eof()  # raises: the stream ended mid-handshake
            early += engine.receive(data)
        _send_pending(sock, engine)
    except TLSError:
        _send_alert(sock, engine)
        raise
    except stdlib_socket.timeout:
        raise HandshakeTimeout(f"no TLS handshake within {timeout:.3g} s") from None
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise ConnectionFailed(f"the peer hung up during the TLS handshake (did it refuse "
                               f"our certificate or our name?): {exc}") from exc
    except OSError as exc:
        raise ConnectionFailed(f"the TLS handshake failed: {exc}") from exc
    finally:
        try:
            sock.settimeout(None)
        except OSError:
            pass
    return early


def _send_pending(sock: Any, engine: TLSEngine) -> None:
    out = engine.data_to_send()
    if out:
        sock.sendall(out)


def _send_alert(sock: Any, engine: TLSEngine) -> None:
    """Tell the peer why we stop, if the stream still takes it."""
    try:
        sock.settimeout(1.0)
        _send_pending(sock, engine)
    except OSError:
        pass


class TLSStream:
    """A connected stream carrying TLS, for a session (the transport contract).

    Args:
        sock: the stream under it, connected and in blocking mode (a gevent
            socket blocks only its greenlet).
        engine: the engine, its handshake done (:func:`handshake`).
    """

    def __init__(self, sock: Any, engine: TLSEngine) -> None:
        self._inner = sock
        self._raw = getattr(sock, "_sock", sock)  # gevent's non-blocking socket, if any
        self._engine = engine
        self._lock = _allocate_lock()
        self._out = bytearray()
        self.family = sock.family
        # Under gevent, data has usually arrived by the time a reader looks:
        # read without waiting through the C record path, and only when
        # nothing was there wait on the hub until the socket is readable. A
        # plain blocking socket is read blocking, once.
        self._read_first = (self._raw is not sock and engine.records is not None
                            and hasattr(sock, "_wait") and hasattr(sock, "_read_event"))

    @property
    def peer_certificate(self) -> Optional[PeerCertificate]:
        """The peer's verified certificate (None when it sent none)."""
        return self._engine.peer_certificate

    @property
    def backlog(self) -> int:
        """Ciphertext taken but not yet written."""
        return len(self._out)

    def fileno(self) -> int:
        return int(self._inner.fileno())

    def recv(self, size: int) -> bytes:
        """Plaintext from the next read of the stream (``size`` is a hint).

        Raises:
            BlockingIOError: what arrived was a TLS record with no data.
            TLSStreamError: the peer's TLS failed (an OSError).
        """
        engine = self._engine
        while self._read_first:
            with self._lock:  # the C record path: read and decrypt in one call
                records = engine.records
                if records is None:
                    break
                plain, status, result = records.recv_from(self._raw.fileno())
                if status == _WANT_MORE and plain:
                    return plain
                if status != _AGAIN:
                    return self._received(plain, status, result)
            self._wait_readable()
        view, array = read_buffer()
        try:  # under gevent, data is usually there already: skip the hub's wait
            count = self._raw.recv_into(array)
        except BlockingIOError:
            count = self._inner.recv_into(array)
        with self._lock:
            try:
                if not count:
                    engine.receive_eof()
                    return b""
                plain = engine.receive(view[:count])
            except TLSError as exc:
                self._out += engine.data_to_send()  # the alert saying why
                raise TLSStreamError(exc) from exc
        # A record the engine wrote in reply (a TLS 1.3 key update) waits in
        # the engine and goes out with our next write: looking for one after
        # every read would cost an OpenSSL exception per call.
        if plain or engine.closed_by_peer:
            return plain
        raise BlockingIOError("a TLS record with no application data")

    def _wait_readable(self) -> None:
        """Wait (this greenlet only) until gevent's socket is readable."""
        if not wait_readable(self._inner):  # gevent closed it
            raise OSError(errno.EBADF, "the TLS stream's socket is closed")

    def _received(self, plain: bytes, status: int, result: int) -> bytes:
        """A C read step that did not end with plaintext (lock held)."""
        engine = self._engine
        try:
            if status == _END:
                engine.receive_eof()
                return b""
            if status != _WANT_MORE:
                plain = engine.finish_receive(plain, status, result)
        except TLSError as exc:
            self._out += engine.data_to_send()
            raise TLSStreamError(exc) from exc
        if plain or engine.closed_by_peer:
            return plain
        raise BlockingIOError("a TLS record with no application data")

    def send(self, data: bytes, flags: int = 0) -> int:
        """Encrypt all of ``data``; write what the socket takes now
        (``MSG_DONTWAIT``) or everything. Returns ``len(data)``."""
        if not flags & _DONTWAIT:
            self.sendall(data)
        elif self._out or not data:
            self._encrypt(data)
            self._write_some()
        else:  # no backlog (the usual case): write the records as they come
            out = self._seal_and_write(data)
            if not out:
                return len(data)
            try:
                sent = self._raw.send(out, _DONTWAIT)
            except BlockingIOError:
                sent = 0
            if sent < len(out):
                self._put_back(memoryview(out)[sent:])
        return len(data)

    def sendall(self, data: bytes) -> None:
        """Encrypt and write ``data`` (``b""``: just the backlog)."""
        if self._out or not data:
            self._encrypt(data)
            self._write_all()
        else:
            out = self._seal_and_write(data)
            if out:
                self._inner.sendall(out)

    def _seal_and_write(self, data: bytes) -> bytes:
        """Encrypt ``data`` and, on the C record path, write what the socket
        takes at once; returns the ciphertext still to write."""
        with self._lock:
            records = self._engine.records
            if records is None:
                return self._encrypt_locked(data)
            written, rest, result = records.send_to(self._raw.fileno(), data)
            if rest is not None and written == len(data):
                return rest
            return self._finish_seal(data, written, rest, result)

    def _seal(self, data: bytes) -> bytes:
        """The records carrying ``data`` (and anything the engine had waiting)."""
        with self._lock:
            return self._encrypt_locked(data)

    def _encrypt_locked(self, data: bytes) -> bytes:
        try:
            return self._engine.encrypt(data)
        except (TLSError, ValueError) as exc:
            raise OSError(f"TLS stream closed: {exc}") from exc

    def _finish_seal(self, data: bytes, written: int, cipher: Optional[bytes],
                     result: int) -> bytes:
        """A C seal step that did not take everything (lock held)."""
        try:
            return self._engine.finish_seal(data, written, cipher, result)
        except (TLSError, ValueError) as exc:
            raise OSError(f"TLS stream closed: {exc}") from exc

    def _encrypt(self, data: bytes) -> None:
        """Add the records carrying ``data`` to the backlog."""
        if data:
            out = self._seal(data)
            with self._lock:
                self._out += out

    def _take(self) -> bytes:
        with self._lock:
            out = bytes(self._out)
            self._out.clear()
        return out

    def _put_back(self, rest: Any) -> None:
        with self._lock:
            self._out[:0] = rest

    def _write_some(self) -> None:
        out = self._take()
        if not out:
            return
        try:
            sent = self._raw.send(out, _DONTWAIT)
        except BlockingIOError:
            sent = 0
        if sent < len(out):
            self._put_back(out[sent:])

    def _write_all(self) -> None:
        out = self._take()
        if out:
            self._inner.sendall(out)

    def shutdown(self, how: int) -> None:
        self._inner.shutdown(how)

    def close(self) -> None:
        """Send close_notify if the socket takes it at once, then close."""
        with self._lock:
            self._engine.close()
            self._out += self._engine.data_to_send()
        try:
            self._write_some()
        except OSError:
            pass
        self._inner.close()

    def __repr__(self) -> str:
        return f"<TLSStream over {self._inner!r}>"


def client_engine(tls: Any, scheme: str, host: str) -> TLSEngine:
    """The engine for a client connecting to ``scheme://host``.

    ``tls://`` checks the host it connects to (unless ``tls`` names
    another); ``tls+unix://`` has no host name, so ``tls`` must name one.

    Raises:
        ValueError: nothing names the host to verify.
    """
    name = None if scheme == "tls+unix" else host
    if name is None and getattr(tls, "server_hostname", None) is None and tls.verify:
        raise ValueError("a tls+unix:// address has no host name to verify: pass "
                         "client_context(..., server_hostname='the name in the server's "
                         "certificate')")
    return TLSEngine(tls, server_side=False, server_hostname=name)


def server_engine(tls: Any) -> TLSEngine:
    """The engine for one accepted connection of a TLS listener."""
    return TLSEngine(tls, server_side=True)


def tls_failure_of(error: BaseException) -> Optional[TLSError]:
    """The TLS error behind a connection error, if one is (its causes followed)."""
    seen = 0
    current: Optional[BaseException] = error
    while current is not None and seen < 10:
        if isinstance(current, TLSError):
            return current
        if isinstance(current, TLSStreamError):
            return current.tls_error
        current = current.__cause__
        seen += 1
    return None
