"""Addresses and stream sockets (layer L3).

syncpb addresses are strings ``tcp://host:port`` (IPv6 hosts in brackets,
``tcp://[::1]:8800``) and ``unix:///absolute/path``, or a ``(host, port)``
tuple. This module parses them, opens client sockets and binds listening
sockets, and turns OS errors into :class:`~syncpb.errors.ConnectionFailed`
with the original error as ``__cause__`` — the boundary where OS errors
become syncpb errors.

The socket module is a parameter so the same code opens plain blocking
sockets for threads and cooperative ones for gevent.
"""

from __future__ import annotations

import os
import socket as stdlib_socket
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Optional, Tuple, Union

from .errors import ConnectionFailed

__all__ = ["Address", "parse_address", "open_stream", "bind_listener"]

AddressLike = Union[str, Tuple[str, int], "Address"]


@dataclass(frozen=True)
class Address:
    """A parsed syncpb address.

    Attributes:
        scheme: ``"tcp"`` or ``"unix"``.
        host: the host (TCP) or the socket path (unix).
        port: the TCP port (0 asks the OS for one when listening).
    """

    scheme: str
    host: str
    port: int = 0

    @property
    def family(self) -> int:
        """The socket family to use."""
        if self.scheme == "unix":
            return stdlib_socket.AF_UNIX
        return stdlib_socket.AF_INET6 if ":" in self.host else stdlib_socket.AF_INET

    @property
    def sockaddr(self) -> Any:
        """The address as the socket module wants it."""
        return self.host if self.scheme == "unix" else (self.host, self.port)

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_address(address: AddressLike) -> Address:
    """Parse ``tcp://host:port``, ``unix:///path`` or ``(host, port)``.

    Raises:
        ValueError: the address has no recognisable form.
    """
    if isinstance(address, Address):
        return address
    if isinstance(address, tuple):
        if len(address) != 2 or not isinstance(address[1], int):
            raise ValueError(f"a tuple address must be (host, port), not {address!r}")
        return Address("tcp", str(address[0]), address[1])
    if not isinstance(address, str):
        raise ValueError(f"unsupported address {address!r}")
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise ValueError(f"address {address!r} needs a scheme: tcp://host:port or unix:///path")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise ValueError(f"unix address {address!r} needs an absolute path (unix:///path)")
        return Address("unix", rest)
    if scheme != "tcp":
        raise ValueError(f"unknown address scheme {scheme!r} in {address!r}")
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise ValueError(f"bad IPv6 address {address!r}; use tcp://[::1]:port")
        port_text = port_text[1:]
    else:
        host, _, port_text = rest.rpartition(":")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"bad tcp address {address!r}; use tcp://host:port")
    return Address("tcp", host, int(port_text))


def open_stream(address: Address, timeout: Optional[float],
                socket_module: ModuleType = stdlib_socket) -> Any:
    """Connect a stream socket to ``address`` and return it in blocking mode.

    Raises:
        ConnectionFailed: the connection could not be made in time.
    """
    try:
        if address.scheme == "unix":
            sock = socket_module.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(address.host)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket_module.create_connection((address.host, address.port), timeout)
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return sock
    except OSError as exc:
        raise ConnectionFailed(f"cannot connect to {address}: {exc}") from exc


def bind_listener(address: Address, backlog: int = 128) -> Tuple[stdlib_socket.socket, Address]:
    """Bind and listen on ``address``; return the socket and the bound address.

    A stale unix socket file is replaced. Port 0 binds a free port, and the
    returned address names it.

    Raises:
        ConnectionFailed: the address cannot be bound.
    """
    sock = stdlib_socket.socket(address.family, stdlib_socket.SOCK_STREAM)
    try:
        if address.scheme == "unix":
            if os.path.exists(address.host) and _is_stale(address.host):
                os.unlink(address.host)
        else:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        sock.bind(address.sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConnectionFailed(f"cannot listen on {address}: {exc}") from exc
    if address.scheme == "unix":
        return sock, address
    return sock, Address("tcp", address.host, sock.getsockname()[1])


def _is_stale(path: str) -> bool:
    """True when ``path`` is a unix socket nobody listens on."""
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return True
    finally:
        probe.close()
    return False
