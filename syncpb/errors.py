"""The whole syncpb exception tree (layer L0: imports nothing from syncpb).

Two families live here:

* :class:`SyncPBError` and its subclasses are raised *by the library*: the
  connection broke, a peer spoke nonsense, a type was refused, a call timed
  out, a remote method raised something that only arrived by name.
* :class:`Error` is the application's "expected failure", the twin of
  Twisted's ``pb.Error``. A remote method raises a subclass of it to report a
  failure that is part of its contract. Subclasses are remembered by their
  wire name (``module.QualName``) so that a failure of that name coming back
  from a peer is raised as the local class again ("comes through as itself").
  Only subclasses of :class:`Error` are ever created from a wire name.
"""

from __future__ import annotations

import errno
from typing import ClassVar, Dict, List, Optional, Type, Union

__all__ = [
    "SyncPBError",
    "ProtocolError",
    "BananaError",
    "InsecureJelly",
    "ConnectionLost",
    "ConnectionFailed",
    "ListenFailed",
    "TLSError",
    "CertificateUntrusted",
    "CertificateExpired",
    "HostnameMismatch",
    "ClientCertificateRequired",
    "NotTLSPeer",
    "DeadReferenceError",
    "RemoteError",
    "NoSuchMethod",
    "CallTimeout",
    "AlreadyCalledError",
    "CancelledError",
    "PoolSaturated",
    "PoolClosed",
    "DatabaseError",
    "DatabaseConnectionLost",
    "DatabaseUnavailable",
    "Unauthorized",
    "LoginFailed",
    "UnauthorizedLogin",
    "UnhandledCredentials",
    "Error",
    "error_class_for",
    "wire_name_of",
    "wire_message",
    "format_seconds",
    "STALE_REFERENCE",
]


class SyncPBError(Exception):
    """Base class of every error raised by syncpb itself.

    Attributes:
        remote_traceback: the peer's traceback text when this error came
            from a peer that opted in to sending tracebacks, else None.
    """

    remote_traceback: Optional[str] = None

    #: What ``str()`` says when the error carries no message (raised bare,
    #: or received from a peer that sent none, as Twisted's checkers do).
    #: Local only: a failure sent to a peer carries the real, possibly
    #: empty, message (:func:`wire_message`), byte for byte as Twisted's.
    default_message: ClassVar[str] = ""

    def __str__(self) -> str:
        return super().__str__() or self.default_message


class ProtocolError(SyncPBError):
    """The peer broke the PB protocol; its connection is closed."""


class BananaError(ProtocolError):
    """A Banana stream could not be encoded or decoded (bad token, limit)."""


class InsecureJelly(SyncPBError):
    """A Jelly type or class was refused by the allow-list; nothing was built."""

    default_message = "a type or class was refused by the allow-list (SecurityOptions)"


class ConnectionLost(SyncPBError):
    """The connection ended while a call was waiting for its answer."""

    default_message = "the connection was lost before the answer arrived"


class ConnectionFailed(SyncPBError):
    """A connection could not be established (the OS error is ``__cause__``)."""


class ListenFailed(ConnectionFailed, OSError):
    """A server could not listen on an address (``Server.listen``).

    The message names the address, the reason and, for the common cases,
    what to do. It is also an :class:`OSError` (``errno`` is the OS's, when
    there was one; the OS error is ``__cause__``), and a
    :class:`ConnectionFailed`, which is what listen raised before this
    class existed, so code that catches either keeps working.
    """

    default_message = "cannot listen on the address"

    @classmethod
    def from_os_error(cls, address: str, exc: OSError,
                      port: Optional[int] = None) -> "ListenFailed":
        """The error for ``exc``, raised binding ``address`` (``port``: its
        TCP port; None for a unix socket), with a hint for the common causes."""
        hint = _listen_hint(exc.errno, port)
        error = cls(f"cannot listen on {address}: {exc}" + (f"; {hint}" if hint else ""))
        error.errno = exc.errno  # strerror stays unset: str() is the message above
        return error


def _listen_hint(code: Optional[int], port: Optional[int]) -> str:
    """What to do about a failed bind, for the errors people meet."""
    if code == errno.EADDRINUSE:
        if port is None:
            return "another process is listening there; stop it or choose another path"
        return ("another process (or another server in this one) is listening there; "
                "pick another port (0 picks a free one) or stop it")
    if code in (errno.EACCES, errno.EPERM):
        if port is None:
            return ("this user may not create the socket file there; choose a directory "
                    "it can write to")
        if 0 < port < 1024:
            return (f"port {port} is below 1024, and such ports need root or the "
                    "CAP_NET_BIND_SERVICE capability; use a port of 1024 or above")
    if code == errno.EADDRNOTAVAIL:
        return ("the host is not an address of this machine; use one of its addresses, "
                "127.0.0.1, or 0.0.0.0 for all of them")
    if code == errno.ENOENT and port is None:
        return "the directory does not exist; create it first"
    return ""


class TLSError(ConnectionFailed):
    """A TLS connection could not be established; the subclass says why and
    the message gives the details (the OpenSSL error is ``__cause__``)."""


class CertificateUntrusted(TLSError):
    """The peer's certificate does not chain to a trusted CA."""


class CertificateExpired(TLSError):
    """The peer's certificate (or one in its chain) has expired or is not yet valid."""


class HostnameMismatch(TLSError):
    """The server's certificate is valid but not for the name we connected to."""


class ClientCertificateRequired(TLSError):
    """The server requires a client certificate and got none (or refused ours)."""


class NotTLSPeer(TLSError):
    """The peer does not speak TLS (a plain PB port, for instance)."""


#: Why a call through a closed connection's reference fails; Twisted's
#: words for it are kept at the end, for whoever searches for them.
STALE_REFERENCE = ("the connection this reference belongs to is closed (lost or "
                   "disconnected); reconnect and fetch the reference again "
                   "(Twisted: 'Calling Stale Broker')")


class DeadReferenceError(SyncPBError):
    """A call was made through a connection that is already closed."""

    default_message = STALE_REFERENCE


class CallTimeout(SyncPBError, TimeoutError):
    """Waiting for a result took longer than the given timeout."""

    default_message = "no result within the timeout"


class AlreadyCalledError(SyncPBError):
    """A Deferred was fired twice."""


class CancelledError(SyncPBError):
    """A Deferred was cancelled before it had a result (``Deferred.cancel()``);
    the twin of Twisted's ``twisted.internet.defer.CancelledError``."""

    default_message = "the Deferred was cancelled"


class PoolSaturated(SyncPBError):
    """A thread pool's queue is full: the work was refused, not queued."""


class PoolClosed(SyncPBError):
    """A thread pool (or a database pool) was stopped and takes no more work."""


class DatabaseError(SyncPBError):
    """Base class of the database pool's own errors (the database's own
    exceptions, such as ``sqlite3.OperationalError``, pass through as they are)."""


class DatabaseConnectionLost(DatabaseError):
    """The database dropped the pooled connection an operation was using.

    The operation was not re-run (it might have been a write); the
    connection is replaced and the next operation gets a fresh one.
    """


class DatabaseUnavailable(DatabaseError):
    """The pool cannot open a connection to the database (it is down)."""


class NoSuchMethod(SyncPBError, AttributeError):
    """The remote object has no method of that name."""

    default_message = "the remote object has no method of that name"


class Unauthorized(SyncPBError):
    """Twin of ``twisted.cred.error.Unauthorized``."""

    default_message = "not authorized"


class LoginFailed(SyncPBError):
    """A login was refused (twin of ``twisted.cred.error.LoginFailed``)."""

    default_message = "login failed"


class UnauthorizedLogin(LoginFailed, Unauthorized):
    """Wrong password or unknown user: the same error for both, as in Twisted.

    Raised bare, as Twisted's checkers raise it (and as it travels), its
    ``str()`` is :attr:`default_message`.
    """

    default_message = "login refused: unknown user or wrong password"


class UnhandledCredentials(LoginFailed):
    """The portal has no checker for this kind of login (e.g. anonymous)."""

    default_message = "login refused: the server has no checker for this kind of login"


class RemoteError(SyncPBError):
    """A remote method raised an exception that is not known locally.

    Attributes:
        remote_type: the fully qualified class name on the remote side,
            e.g. ``"builtins.ValueError"``.
        remote_parents: fully qualified names of the remote class's MRO.
        remote_traceback: the remote traceback text when the peer opted in
            to sending tracebacks, otherwise ``None``.
    """

    def __init__(
        self,
        remote_type: str,
        message: str,
        remote_traceback: Optional[str] = None,
        remote_parents: Optional[List[str]] = None,
    ) -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.remote_parents = list(remote_parents or [remote_type])

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.message}"


# Wire name (``module.QualName``) -> local Error subclass, or one of syncpb's
# own errors that has a Twisted twin (``_TWISTED_NAMES``). Error classes are
# code, defined once per process, so a process-wide table is the honest shape.
_error_classes: Dict[str, Type[Union[Error, SyncPBError]]] = {}


class Error(Exception):
    """An expected, application-level failure of a remote method.

    The twin of Twisted's ``pb.Error``: on the wire its parents include
    ``twisted.spread.pb.Error`` so a Twisted caller can ``trap(pb.Error)``.
    A syncpb caller that defines the same class (same module and name)
    receives the failure as an instance of that class.
    """

    #: The peer's traceback text when the failure came from a peer that
    #: opted in to sending tracebacks, else None.
    remote_traceback: Optional[str] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _error_classes[f"{cls.__module__}.{cls.__qualname__}"] = cls


# Local classes whose wire names are Twisted's, so both sides agree.
_TWISTED_NAMES: Dict[Type[Union[Error, SyncPBError]], str] = {
    Error: "twisted.spread.pb.Error",
    NoSuchMethod: "twisted.spread.flavors.NoSuchMethod",
    InsecureJelly: "twisted.spread.jelly.InsecureJelly",
    DeadReferenceError: "twisted.spread.pb.DeadReferenceError",
    ConnectionLost: "twisted.spread.pb.PBConnectionLost",
    Unauthorized: "twisted.cred.error.Unauthorized",
    LoginFailed: "twisted.cred.error.LoginFailed",
    UnauthorizedLogin: "twisted.cred.error.UnauthorizedLogin",
    UnhandledCredentials: "twisted.cred.error.UnhandledCredentials",
}
_error_classes.update({name: cls for cls, name in _TWISTED_NAMES.items()})


def wire_name_of(cls: type) -> str:
    """Return the name ``cls`` travels under in a failure's ``type``/``parents``."""
    name = _TWISTED_NAMES.get(cls)
    if name is not None:
        return name
    return f"{cls.__module__}.{cls.__qualname__}"


def error_class_for(wire_name: str) -> Optional[Type[Union[Error, SyncPBError]]]:
    """Return the local exception class for a failure's wire type, if any.

    Only :class:`Error` subclasses and syncpb's own errors that have a
    Twisted twin are returned; everything else stays a :class:`RemoteError`.
    """
    return _error_classes.get(wire_name)


def wire_message(exc: BaseException) -> str:
    """The message a failure of ``exc`` carries to a peer: ``str(exc)``,
    except that a syncpb error raised without a message travels without
    one (not with its :attr:`~SyncPBError.default_message`), exactly as
    Twisted sends the same error."""
    if isinstance(exc, SyncPBError):
        return super(SyncPBError, exc).__str__()
    return str(exc)


def format_seconds(seconds: Optional[float]) -> str:
    """A duration for a message: ``"1 second"``, ``"2.5 seconds"``, ``"0 seconds"``
    (``None``, no limit: ``"an unlimited time"``)."""
    if seconds is None:
        return "an unlimited time"
    text = f"{seconds:g}"
    return f"{text} second" if text == "1" else f"{text} seconds"
