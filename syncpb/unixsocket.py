"""Unix-domain listening sockets done safely, and their peers' credentials (layer L3).

Theory of operation
-------------------
Binding a unix socket creates a file, so listening can collide with what
is already at that path. :func:`bind_unix` decides by looking, never by
guessing:

* nothing there: bind;
* a socket nobody accepts on (connecting is refused): a dead server's
  leftover, replaced;
* a socket a live server accepts on: refused, never taken over;
* anything else (a regular file, a directory, a symlink, even one pointing
  at a socket): refused, never removed.

The socket file gets ``mode`` (0600 by default) between ``bind`` and
``listen``, before anyone can connect (connecting to a socket that does not
listen yet is refused). :func:`unlink_unix` removes the file on stop only if
it is still the one we bound (same device and inode), so a server that
replaced ours never loses its socket.

:func:`peer_credentials` reads the connected peer's pid, uid and gid
(``SO_PEERCRED``), which the kernel vouches for: a login can trust them.
"""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import stat
import struct
import sys
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from .errors import ConnectionFailed, ListenFailed

__all__ = ["UnixCredentials", "MAX_PATH_BYTES", "check_path", "bind_unix", "unlink_unix",
           "peer_credentials"]

#: Longest unix socket path the kernel accepts (``sun_path`` less its NUL).
MAX_PATH_BYTES = 107
#: Mode of a new socket file unless the caller asks for another.
DEFAULT_MODE = 0o600

_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class UnixCredentials:
    """Who is at the other end of a unix socket, as the kernel says."""

    pid: int
    uid: int
    gid: int


def check_path(path: str) -> None:
    """Refuse a path the kernel cannot bind or connect to.

    Raises:
        ConnectionFailed: the path is longer than :data:`MAX_PATH_BYTES`.
    """
    size = len(os.fsencode(path))
    if size > MAX_PATH_BYTES:
        raise ConnectionFailed(
            f"unix socket path {path!r} is {size} bytes; the kernel's limit is "
            f"{MAX_PATH_BYTES} (use a shorter directory)")


def bind_unix(path: str, mode: Optional[int] = None,
              backlog: int = 128) -> Tuple[stdlib_socket.socket, Tuple[int, int]]:
    """Listen on a unix socket at ``path``; return the socket and the
    file's identity (device, inode) for :func:`unlink_unix`.

    Raises:
        ListenFailed: the path is too long, is taken by a live server
            or by something that is not a socket, or cannot be bound.
    """
    try:
        check_path(path)
    except ConnectionFailed as exc:
        raise ListenFailed(f"cannot listen on unix://{path}: {exc}") from None
    _clear_stale(path)
    sock = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, DEFAULT_MODE if mode is None else mode)  # before anyone can connect
        info = os.stat(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenFailed.from_os_error(f"unix://{path}", exc) from exc
    return sock, (info.st_dev, info.st_ino)


def _clear_stale(path: str) -> None:
    """Remove a dead server's socket file at ``path``; refuse anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        kind = ("a directory" if stat.S_ISDIR(info.st_mode)
                else "a symlink" if stat.S_ISLNK(info.st_mode)
                else "a regular file" if stat.S_ISREG(info.st_mode) else "not a socket")
        raise ListenFailed(f"cannot listen on unix://{path}: the path exists and is "
                           f"{kind}; it is left alone (remove it or choose another path)")
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody accepts on it: a dead server's leftover
        return
    except OSError as exc:
        raise ListenFailed(f"cannot listen on unix://{path}: cannot tell whether the "
                           f"socket there is in use ({exc})") from exc
    finally:
        probe.close()
    raise ListenFailed(f"cannot listen on unix://{path}: a server is listening there; "
                       f"stop it first, or choose another path (a live server's socket "
                       f"is never taken over)")


def unlink_unix(path: str, identity: Tuple[int, int]) -> None:
    """Remove the socket file at ``path`` if it is still the one we bound."""
    try:
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) == identity:
            os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


#: Send buffer of a connected unix socket. Linux's default (about 208 KiB)
#: splits a large message into several wake-ups of the reader; TCP on
#: loopback grows its buffers by itself.
SEND_BUFFER = 1024 * 1024


def tune(sock: Any) -> None:
    """Give a connected unix socket a send buffer for large messages
    (nothing for other sockets; best effort)."""
    if getattr(sock, "family", None) == stdlib_socket.AF_UNIX:
        try:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass


#: SO_PEERCRED with Linux's (pid, uid, gid) layout: Linux only (macOS and
#: FreeBSD lack it; OpenBSD orders the fields differently).
_HAS_PEERCRED = sys.platform.startswith("linux") and hasattr(stdlib_socket, "SO_PEERCRED")


def peer_credentials(sock: Any) -> Optional[UnixCredentials]:
    """The connected unix-socket peer's pid, uid and gid (None for other
    sockets, and on platforms without Linux's ``SO_PEERCRED``)."""
    if getattr(sock, "family", None) != stdlib_socket.AF_UNIX or not _HAS_PEERCRED:
        return None
    try:
        raw = sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_PEERCRED,
                              _CREDENTIALS.size)
    except OSError:
        return None
    pid, uid, gid = _CREDENTIALS.unpack(raw)
    return UnixCredentials(pid, uid, gid)
