"""Addresses and stream sockets (layer L3).

syncpb addresses are strings ``tcp://host:port`` (IPv6 hosts in brackets,
``tcp://[::1]:8800``) and ``unix:///absolute/path``, or a ``(host, port)``
tuple. This module parses them, opens client sockets and binds listening
sockets, and turns OS errors into :class:`~syncpb.errors.ConnectionFailed`
(:class:`~syncpb.errors.ListenFailed` when listening) with the original
error as ``__cause__`` — the boundary where OS errors become syncpb errors.

The transport contract
----------------------
What a session (:mod:`syncpb.session`, the one place the broker meets a
transport) needs of a connected stream is a subset of a socket's interface,
so a plain TCP or unix socket (the standard library's, or gevent's on the
server) *is* a transport, at no cost, and a stream that wraps another (TLS,
in :mod:`syncpb.tls`) implements the same subset:

* ``recv(size) -> bytes``: wait for data (the thread, or only the greenlet
  on a gevent socket); ``b""`` at the end of the stream. A wrapping stream
  whose input carried no data for us yet (a TLS record of its own) raises
  ``BlockingIOError`` instead of waiting again.
* ``send(data, flags) -> int``: with ``MSG_DONTWAIT``, take what can be
  taken without waiting (0 when nothing). A wrapping stream may take
  everything and still hold bytes to write (``backlog`` non-zero); the next
  ``sendall`` writes them first, ``sendall(b"")`` only them.
* ``sendall(data)``: wait until everything is written.
* ``shutdown(how)``, ``close()``, ``fileno()`` (for ``select``), ``family``.
* Optional: ``sendmsg`` (write several buffers at once) and gevent's
  ``_sock`` (the non-blocking socket under a cooperative one, read and
  written directly when data is already there).

OS errors are ``OSError``; a wrapping stream raises its own errors as
subclasses of :class:`~syncpb.errors.ConnectionFailed` (``TLSError``)
during its handshake and ``OSError`` afterwards.

Client sockets are always the standard library's own (never a
monkey-patched or gevent socket), so any thread may use them. Inside a
running gevent hub the connect itself is made cooperatively (only the
calling greenlet waits) and the connected descriptor is then handed to a
standard socket.
"""

from __future__ import annotations

import mmap
import socket as stdlib_socket
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from .errors import ConnectionFailed, ListenFailed
from .unixsocket import UnixCredentials, bind_unix, check_path, tune
from .waiting import real

__all__ = ["Address", "PeerInfo", "parse_address", "open_stream", "bind_listener", "send_pieces"]

AddressLike = Union[str, Tuple[str, int], "Address"]


@dataclass(frozen=True)
class Address:
    """A parsed syncpb address.

    Attributes:
        scheme: ``"tcp"``, ``"unix"``, ``"tls"`` (TLS over TCP) or
            ``"tls+unix"`` (TLS over a unix socket).
        host: the host (TCP) or the socket path (unix).
        port: the TCP port (0 asks the OS for one when listening).
    """

    scheme: str
    host: str
    port: int = 0

    @property
    def is_unix(self) -> bool:
        """True for a unix socket (with or without TLS)."""
        return self.scheme in ("unix", "tls+unix")

    @property
    def is_tls(self) -> bool:
        """True when the stream carries TLS."""
        return self.scheme in ("tls", "tls+unix")

    @property
    def family(self) -> int:
        """The socket family to use."""
        if self.is_unix:
            return stdlib_socket.AF_UNIX
        return stdlib_socket.AF_INET6 if ":" in self.host else stdlib_socket.AF_INET

    @property
    def sockaddr(self) -> Any:
        """The address as the socket module wants it."""
        return self.host if self.is_unix else (self.host, self.port)

    def __str__(self) -> str:
        if self.is_unix:
            return f"{self.scheme}://{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class PeerInfo:
    """What a connection's transport knows about the other end.

    Attributes:
        address: the peer's address as text (TCP host and port, or the
            unix socket path).
        unix: the peer's pid, uid and gid on a unix socket (``SO_PEERCRED``,
            vouched for by the kernel), else None.
        certificate: the peer's verified TLS certificate, else None.
    """

    address: str
    unix: Optional[UnixCredentials] = None
    certificate: Any = None


#: The forms :func:`parse_address` accepts, for error messages.
ADDRESS_FORMS = ("tcp://host:port, tls://host:port, unix:///path, tls+unix:///path "
                 "or a (host, port) tuple")
_UNIX_SCHEMES = ("unix", "tls+unix")


def parse_address(address: AddressLike) -> Address:
    """Parse ``tcp://host:port``, ``unix:///path``, ``tls://host:port``,
    ``tls+unix:///path`` or ``(host, port)``.

    Raises:
        ValueError: the address has no recognisable form (the message says
            what was wrong and, where it can guess, what was meant).
    """
    if isinstance(address, Address):
        return address
    if isinstance(address, tuple):
        if len(address) != 2 or not isinstance(address[1], int):
            raise ValueError(f"a tuple address must be (host, port), not {address!r}")
        return Address("tcp", str(address[0]), address[1])
    if not isinstance(address, str):
        raise ValueError(f"unsupported address {address!r}; use {ADDRESS_FORMS}")
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise ValueError(_without_scheme(address))
    if scheme in _UNIX_SCHEMES:
        if not rest.startswith("/"):
            raise ValueError(f"{scheme} address {address!r} needs an absolute path after "
                             f"{scheme}://, three slashes in all ({scheme}:///path); did "
                             f"you mean {scheme}:///{rest}?")
        return Address(scheme, rest)
    if scheme not in ("tcp", "tls"):
        raise ValueError(f"unknown address scheme {scheme!r} in {address!r}; "
                         f"use {ADDRESS_FORMS}")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise ValueError(f"bad IPv6 address {address!r}; use tcp://[::1]:port")
        port_text = port_text[1:]
    else:
        host, _, port_text = rest.rpartition(":")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"bad {scheme} address {address!r}; use {scheme}://host:port")
    return Address(scheme, host, int(port_text))


def _without_scheme(address: str) -> str:
    """Why ``address`` (no ``://`` in it) is refused, and what was likely meant."""
    head, colon, tail = address.partition(":")
    if colon and head in _UNIX_SCHEMES:
        path = "/" + tail.lstrip("/")
        return (f"{head} address {address!r} needs three slashes before an absolute "
                f"path: {head}://{path}")
    if colon and head in ("tcp", "tls"):
        return (f"{head} address {address!r} needs two slashes after the scheme: "
                f"{head}://{tail.lstrip('/')}")
    if address.startswith("/"):
        guess = f"; did you mean unix://{address}?"
    elif colon:
        guess = f"; did you mean tcp://{address}?"
    else:
        guess = ""
    return f"address {address!r} has no scheme (accepted forms: {ADDRESS_FORMS}){guess}"


def open_stream(address: Address, timeout: Optional[float], cooperative: bool = False,
                setup: Optional[Callable[[Any], Any]] = None) -> Tuple[stdlib_socket.socket, Any]:
    """Connect a stream socket to ``address`` and return it in blocking mode.

    Args:
        address: where to connect.
        timeout: seconds allowed for the connect (None: the OS's limit).
        cooperative: connect with gevent's sockets (the caller is a
            greenlet in a running hub, and only it waits).
        setup: called with the connected socket (still gevent's when
            ``cooperative``) before it is returned: a TLS handshake.

    Returns:
        A standard library socket (not a gevent one), in blocking mode, and
        what ``setup`` returned (None without it).

    Raises:
        ConnectionFailed: the connection could not be made in time (or
            ``setup`` raised it).
    """
    try:
        if cooperative:
            sock, prepared = _connect_cooperatively(address, timeout, setup)
        else:
            sock = _connect(address, timeout)
            try:
                prepared = setup(sock) if setup is not None else None
            except BaseException:
                sock.close()
                raise
        if not address.is_unix:
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
        tune(sock)
        sock.settimeout(None)
        return sock, prepared
    except OSError as exc:
        raise ConnectionFailed(f"cannot connect to {address}: {exc}") from exc


def _connect(address: Address, timeout: Optional[float]) -> stdlib_socket.socket:
    """Connect with the standard library's own socket class and resolver
    (as they were before any monkey-patching)."""
    socket_class = real("socket", "socket")
    if address.is_unix:
        check_path(address.host)
        targets = [(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM, 0, address.host)]
    else:
        getaddrinfo = real("socket", "getaddrinfo")
        targets = [(family, kind, proto, sockaddr) for family, kind, proto, _, sockaddr
                   in getaddrinfo(address.host, address.port, 0, stdlib_socket.SOCK_STREAM)]
    error: Optional[OSError] = None
    for family, kind, proto, sockaddr in targets:
        sock = socket_class(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock  # type: ignore[no-any-return]
        except OSError as exc:
            sock.close()
            error = exc
    raise error if error is not None else OSError(f"no address found for {address}")


def _connect_cooperatively(address: Address, timeout: Optional[float],
                           setup: Optional[Callable[[Any], Any]]
                           ) -> Tuple[stdlib_socket.socket, Any]:
    """Connect with gevent's sockets, then hand the descriptor to a standard
    socket (so that plain threads may use the connection too)."""
    import gevent.socket
    if address.is_unix:
        check_path(address.host)
        green = gevent.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        try:
            green.settimeout(timeout)
            green.connect(address.host)
        except BaseException:
            green.close()
            raise
    else:
        green = gevent.socket.create_connection((address.host, address.port), timeout)
    try:
        prepared = setup(green) if setup is not None else None
    except BaseException:
        green.close()
        raise
    family, kind, proto = green.family, green.type, green.proto
    return real("socket", "socket")(family, kind, proto, fileno=green.detach()), prepared


def bind_listener(address: Address, backlog: int = 128, mode: Optional[int] = None,
                  reuse_port: bool = False
                  ) -> Tuple[stdlib_socket.socket, Address, Optional[Tuple[int, int]]]:
    """Bind and listen on ``address``.

    Port 0 binds a free port, and the returned address names it. A unix
    socket is made as :func:`syncpb.unixsocket.bind_unix` says (mode 0600
    unless ``mode`` is given; a dead server's socket replaced; a live one,
    or anything that is not a socket, refused).

    ``reuse_port`` sets ``SO_REUSEPORT`` on a TCP listener (Linux, BSD):
    several processes may then listen on the same port, and the kernel
    spreads new connections over them (``syncpb serve --workers``).

    Returns:
        The socket, the bound address, and for a unix socket the file's
        identity (for :func:`syncpb.unixsocket.unlink_unix`), else None.

    Raises:
        ListenFailed: the address cannot be bound (the message says why and,
            for the common causes, what to do).
    """
    if address.is_unix:
        if reuse_port:
            raise ValueError(f"{address}: a unix socket cannot be shared with SO_REUSEPORT")
        sock, identity = bind_unix(address.host, mode, backlog)
        return sock, address, identity
    if reuse_port and not hasattr(stdlib_socket, "SO_REUSEPORT"):
        raise ValueError("SO_REUSEPORT is not available on this platform")
    sock = stdlib_socket.socket(address.family, stdlib_socket.SOCK_STREAM)
    try:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
        sock.bind(address.sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenFailed.from_os_error(str(address), exc, address.port) from exc
    return sock, Address(address.scheme, address.host, sock.getsockname()[1]), None


# ---------------------------------------------------------------- writing

_MAX_PIECES = 512          # buffers per sendmsg (the OS allows IOV_MAX, 1024 on Linux)
_GATHER_FROM = 64 * 1024   # below this in total, one joined buffer is cheapest
_OWN_PIECE = 16 * 1024     # a piece this large is written from where it is


def _sendall(sock: Any, data: Union[bytes, memoryview]) -> None:
    """``sock.sendall(data)``, trying one direct non-blocking send first.

    A gevent socket's ``sendall`` goes through several Python layers and a
    ``getsockopt`` call; a small message nearly always fits the kernel's
    buffer in one ``send`` on the underlying socket.
    """
    raw = getattr(sock, "_sock", None)  # gevent's non-blocking stdlib socket
    if raw is not None:
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
    sock.sendall(data)


#: The most one read takes: into the reused buffer (:func:`read_buffer`, of
#: this size), or into a broker's buffer for a message arriving in pieces.
#: Large: a big message then arrives in one read or a few, instead of as
#: many 64 KiB pieces to hold and join.
READ_SIZE = 1024 * 1024
_buffers = real("_thread", "_local")()  # per OS thread, also under monkey-patching


def read_buffer() -> Tuple[memoryview, Any]:
    """This OS thread's read buffer, reused: ``(view, buffer)``.

    Reading into it and copying out the bytes that came costs less than a
    fresh ``recv`` buffer per read: a large one is allocated, shrunk and
    given back to the OS by the allocator, page faults included (a 256 KiB
    echo ran at half speed or less that way). It is anonymous memory, so
    only the pages reads fill become resident. Readers in one thread (the
    greenlets of a hub) share it safely: a read fills it and the reader
    copies out before anything can switch."""
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        area = mmap.mmap(-1, READ_SIZE)
        buffer = _buffers.buffer = (memoryview(area), area)
    return buffer


def wait_readable(sock: Any) -> bool:
    """Wait (this greenlet only) until gevent's socket ``sock`` is readable.

    Returns False when it cannot be waited on that way (not gevent's, or
    closed); a socket closed during the wait raises gevent's OSError."""
    event = getattr(sock, "_read_event", None)
    if event is None:
        return False
    sock._wait(event)
    return True


def send_pieces(sock: Any, pieces: Sequence[Union[bytes, memoryview]]) -> None:
    """Write ``pieces`` in order, in as few system calls as possible.

    Small pieces (the encoder makes one per token) are joined; large ones
    (a long string payload) are passed to ``sendmsg`` where they are,
    because joining a large payload allocates and fills a fresh buffer,
    which costs more, page faults included, than the copy itself.
    """
    if len(pieces) == 1:
        _sendall(sock, pieces[0])
        return
    buffers = gather(pieces, sock)
    if len(buffers) == 1:
        _sendall(sock, buffers[0])
        return
    while buffers:
        buffers = _after(buffers, sock.sendmsg(buffers[:_MAX_PIECES]))


def gather(pieces: Sequence[Any], sock: Any) -> List[Any]:
    """``pieces`` as the buffers to write: one joined buffer, or (for a large
    total on a socket with ``sendmsg``) runs of small pieces joined and
    large ones as they are."""
    if sum(map(len, pieces)) < _GATHER_FROM or not hasattr(sock, "sendmsg"):
        return [b"".join(pieces)]
    buffers: List[Any] = []
    run: List[Any] = []
    for piece in pieces:
        if len(piece) < _OWN_PIECE:
            run.append(piece)
            continue
        if run:
            buffers.append(b"".join(run))
            run = []
        buffers.append(piece)
    if run:
        buffers.append(b"".join(run))
    return buffers


def send_pieces_nowait(sock: Any, pieces: List[Any], flags: int) -> List[Any]:
    """Write what of ``pieces`` the socket takes at once (``flags`` holds
    MSG_DONTWAIT); returns what it did not take, in order."""
    buffers = gather(pieces, sock) if len(pieces) > 1 else pieces
    while buffers:
        offered = buffers[:_MAX_PIECES]
        try:
            if len(offered) == 1:
                sent = sock.send(offered[0], flags)
            else:
                sent = sock.sendmsg(offered, (), flags)
        except BlockingIOError:
            return buffers
        buffers = _after(buffers, sent)
        if sent < sum(map(len, offered)):  # the socket is full
            return buffers
    return buffers


def _after(buffers: List[Any], sent: int) -> List[Any]:
    """What is left of ``buffers`` once their first ``sent`` bytes are written."""
    index = 0
    while index < len(buffers) and sent >= len(buffers[index]):
        sent -= len(buffers[index])
        index += 1
    buffers = buffers[index:]
    if sent:
        buffers[0] = memoryview(buffers[0])[sent:]
    return buffers
