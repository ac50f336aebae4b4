"""The TLS engine's steady-state calls, made straight into OpenSSL.

Theory of operation
-------------------
Once a handshake is done, a PB call over TLS costs each side four OpenSSL
steps: write the arriving ciphertext into the incoming memory BIO, read
the plaintext out (``SSL_read`` until it wants more), encrypt the answer
(``SSL_write``) and drain the outgoing BIO. pyOpenSSL wraps each step in
a Python method that checks its arguments, allocates a fresh buffer,
inspects three callback helpers and, for the normal "nothing more to
read" outcome, raises and catches ``WantReadError``. For small messages
that wrapping costs several times what OpenSSL itself does.

:class:`DirectCalls` makes the same four steps through the very binding
pyOpenSSL uses (``OpenSSL._util.lib``, which is cryptography's OpenSSL),
on the same ``SSL`` object and memory BIOs, with return codes instead of
exceptions for the outcomes of a healthy connection: data, "want read",
and close_notify. Anything else (an alert, a bad record, a key update
waiting for the peer) goes to pyOpenSSL's own error translation with the
same result code and OpenSSL's error queue untouched, so the engine sees
exactly the ``SSL.Error`` it would have seen from the public methods.

:class:`CompiledCalls` goes one step further where the optional C
extension ``syncpb.tls._records`` was built: each step is then a single
call into C, which calls the same OpenSSL functions (their addresses taken
from the same binding) on the same objects. What a failed step means is
still decided here, by pyOpenSSL. ``SYNCPB_PURE=1`` leaves the extension
out; without it (no compiler at install time) one log line says so.

It relies on pyOpenSSL's private attributes (``_ssl``, ``_into_ssl``,
``_from_ssl``, ``_raise_ssl_error``), so :func:`bind` checks they exist and returns None when
they do not (another pyOpenSSL version); the engine then uses the public
methods throughout. ``SYNCPB_TLS_DIRECT=0`` in the environment forces
that too. The tests run every TLS test all three ways.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, List, Optional, Protocol, Tuple, Union

__all__ = ["CLOSED", "FAILED", "WANT_MORE", "CompiledCalls", "DirectCalls", "bind",
           "compiled", "enabled"]

log = logging.getLogger("syncpb.tls")

_CHUNK = 65536

#: The most ciphertext a memory BIO may hold back between reads: one
#: incomplete record (16 KiB of data, its header, tag and padding).
_HELD_BACK = 16384 + 2048


def _load() -> Any:
    """The binding pyOpenSSL calls OpenSSL through, if it has what we need."""
    try:
        from OpenSSL._util import ffi, lib
    except ImportError:  # pragma: no cover - another pyOpenSSL layout
        return None
    needed = ("SSL_read", "SSL_write", "SSL_get_error", "BIO_read", "BIO_write",
              "SSL_pending", "BIO_get_mem_data", "SSL_ERROR_WANT_READ",
              "SSL_ERROR_ZERO_RETURN")
    if not all(hasattr(lib, name) for name in needed):  # pragma: no cover
        return None
    return ffi, lib


_BINDING = _load()


def enabled() -> bool:
    """Direct calls are available and not switched off (``SYNCPB_TLS_DIRECT=0``)."""
    return _BINDING is not None and os.environ.get("SYNCPB_TLS_DIRECT", "1") != "0"


_records: Any = None
_records_tried = False


def _load_records() -> Any:
    """The C record path, bound to pyOpenSSL's OpenSSL (None if not built)."""
    global _records, _records_tried
    if not _records_tried:
        _records_tried = True
        try:
            module = importlib.import_module(f"{__package__}._records")
        except ImportError as exc:
            log.info("syncpb.tls: the compiled TLS record path is not built (%s); "
                     "using the Python one", exc)
            return None
        ffi, lib = _BINDING
        raw = getattr(lib, "_original_lib", lib)  # cryptography wraps its cffi lib
        try:
            addresses = [int(ffi.cast("uintptr_t", ffi.addressof(raw, name)))
                         for name in ("SSL_read", "SSL_write", "SSL_get_error",
                                      "BIO_read", "BIO_write", "SSL_pending",
                                      "BIO_get_mem_data")]
        except (AttributeError, TypeError) as exc:  # pragma: no cover - another binding
            log.info("syncpb.tls: OpenSSL's functions cannot be handed to the compiled "
                     "TLS record path (%s); using the Python one", exc)
            return None
        module.bind(*addresses, lib.SSL_ERROR_WANT_READ, lib.SSL_ERROR_ZERO_RETURN)
        _records = module
    return _records


def compiled() -> bool:
    """The C record path is built and in use (``SYNCPB_PURE=1`` leaves it out)."""
    return (enabled() and os.environ.get("SYNCPB_PURE", "0") != "1"
            and _load_records() is not None)


class DirectCalls:
    """The steady-state steps of one pyOpenSSL connection, made directly.

    A step that does not go the healthy way raises what pyOpenSSL's own
    method would: the result code goes to pyOpenSSL's error translation.
    """

    __slots__ = ("_ssl", "_into", "_from", "_ffi", "_lib", "_alloc", "_want_read",
                 "_zero_return", "_raise")

    def __init__(self, connection: Any) -> None:
        ffi, lib = _BINDING
        self._ssl = connection._ssl
        self._into = connection._into_ssl
        self._from = connection._from_ssl
        self._raise = connection._raise_ssl_error  # turns a failed step into SSL.Error
        self._ffi = ffi
        self._lib = lib
        # pyOpenSSL's own choice: buffers OpenSSL fills need no zeroing.
        self._alloc = ffi.new_allocator(should_clear_after_alloc=False)
        self._want_read = lib.SSL_ERROR_WANT_READ
        self._zero_return = lib.SSL_ERROR_ZERO_RETURN

    def receive(self, data: Union[bytes, memoryview]) -> Tuple[bytes, bool]:
        """Put ``data`` into the incoming BIO and decrypt all that is complete.

        Returns:
            The plaintext, and whether the peer sent close_notify.

        Raises:
            OpenSSL.SSL.Error: as pyOpenSSL's ``recv`` raises it.
        """
        ffi, lib, ssl = self._ffi, self._lib, self._ssl
        if data:
            with ffi.from_buffer(data) as cdata:
                if lib.BIO_write(self._into, cdata, len(cdata)) != len(cdata):
                    raise MemoryError("OpenSSL could not take incoming TLS data")
        # Room for all the plaintext this data completes: at most its own
        # size plus one partial record held back from before. Records are
        # decrypted one after another into it, and copied out once.
        room = len(data) + _HELD_BACK
        buffer = self._alloc("char[]", room)
        chunks: List[bytes] = []
        filled = 0
        while True:
            if filled == room:  # more than expected: hand this much over, go on
                chunks.append(ffi.buffer(buffer, filled)[:])
                filled = 0
            count = lib.SSL_read(ssl, buffer + filled, room - filled)
            if count > 0:
                filled += count
                continue
            if filled:
                chunks.append(ffi.buffer(buffer, filled)[:])
            reason = lib.SSL_get_error(ssl, count)
            plain = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if reason == self._want_read:
                return plain, False
            if reason == self._zero_return:
                return plain, True
            self._raise(ssl, count)  # the error queue is as SSL_read left it
            return plain, False  # pragma: no cover - _raise always raises here

    def send(self, plaintext: Union[bytes, memoryview]) -> int:
        """Encrypt ``plaintext`` into the outgoing BIO.

        Returns:
            How much was taken: all of it, unless a step failed after the
            first record (the caller then repeats the rest, which raises).

        Raises:
            OpenSSL.SSL.Error: as pyOpenSSL's ``send`` raises it
                (``WantReadError`` when a key update waits for the peer).
        """
        with self._ffi.from_buffer(plaintext) as cdata:
            return self._write(cdata, len(cdata))

    def _write(self, cdata: Any, size: int) -> int:
        """``SSL_write`` until all of ``size`` bytes are in: pyOpenSSL's
        contexts allow partial writes, so each call takes one record."""
        lib, ssl = self._lib, self._ssl
        done = 0
        while done < size:
            count = lib.SSL_write(ssl, cdata + done, size - done)
            if count <= 0:
                if done:
                    return done
                self._raise(ssl, count)
            done += count
        return done

    def seal(self, plaintext: Union[bytes, memoryview]) -> Tuple[int, bytes]:
        """:meth:`send`, then :meth:`data_to_send`, in one step.

        Returns:
            How much plaintext was taken, and all the ciphertext waiting.
        """
        with self._ffi.from_buffer(plaintext) as cdata:
            written = self._write(cdata, len(cdata))
        return written, self.data_to_send()

    def data_to_send(self) -> bytes:
        """Drain the outgoing BIO (b"" when it is empty)."""
        ffi, lib, source = self._ffi, self._lib, self._from
        buffer = self._alloc("char[]", _CHUNK)
        count = lib.BIO_read(source, buffer, _CHUNK)
        if count <= 0:
            return b""
        first: bytes = ffi.buffer(buffer, count)[:]
        if count < _CHUNK:  # a memory BIO hands over all it has at once
            return first
        chunks = [first]
        while count == _CHUNK:
            count = lib.BIO_read(source, buffer, _CHUNK)
            if count > 0:
                chunks.append(ffi.buffer(buffer, count)[:])
        return b"".join(chunks)


_Data = Union[bytes, bytearray, memoryview]


class Records(Protocol):
    """The C record path's ``syncpb.tls._records.Records`` (tls/_records.c,
    which carries no type information): ``status`` is one of the constants
    below, ``result`` OpenSSL's return for :meth:`CompiledCalls.fail`."""

    def receive(self, data: _Data, /) -> Tuple[bytes, int, int]:
        """(plaintext, status, result): decrypt all that is complete."""
        ...

    def seal(self, data: _Data, /) -> Tuple[int, Optional[bytes], int]:
        """(written, ciphertext or None if nothing went in, result)."""
        ...

    def recv_from(self, fd: int, /) -> Tuple[bytes, int, int]:
        """(plaintext, status, result): read the socket once and decrypt."""
        ...

    def send_to(self, fd: int, data: _Data, /) -> Tuple[int, Optional[bytes], int]:
        """(written, rest, result): encrypt, write what the socket takes."""
        ...

    def drain(self) -> bytes:
        """The ciphertext waiting to be written."""
        ...


class CompiledCalls(DirectCalls):
    """:class:`DirectCalls` plus the C record path (``syncpb.tls._records``).

    The engine calls :attr:`records` itself in the steady state (one call
    per step: ``receive``, ``seal``) and :meth:`fail` when a step did not go
    the healthy way; the other steps are :class:`DirectCalls`'.
    """

    __slots__ = ("records",)

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        ffi = self._ffi
        self.records: Records = _records.Records(
            int(ffi.cast("uintptr_t", self._ssl)), int(ffi.cast("uintptr_t", self._into)),
            int(ffi.cast("uintptr_t", self._from)), connection)

    def fail(self, result: int) -> None:
        """Raise what pyOpenSSL makes of a failed step's ``result`` (OpenSSL's
        error queue is as the step left it)."""
        self._raise(self._ssl, result)

    def data_to_send(self) -> bytes:
        return self.records.drain()


#: How a step of the C record path ended (``syncpb.tls._records``): all
#: complete records decrypted, the peer's close_notify, a failure; and for
#: ``recv_from`` only, nothing to read yet and the end of the stream.
WANT_MORE, CLOSED, FAILED, AGAIN, END = 0, 1, 2, 3, 4


def bind(connection: Any) -> Optional[DirectCalls]:
    """Direct calls for ``connection``, or None when they cannot (or must not) be used."""
    if not enabled():
        return None
    if not all(hasattr(connection, name)
               for name in ("_ssl", "_into_ssl", "_from_ssl", "_raise_ssl_error")):
        return None  # pragma: no cover - another pyOpenSSL version
    if connection._into_ssl is None or connection._from_ssl is None:
        return None  # a connection over a real socket, not memory BIOs
    if compiled():
        return CompiledCalls(connection)
    return DirectCalls(connection)
