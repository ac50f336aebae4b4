"""Logins by what the connection proves, with no secret on the wire (layer L3).

A unix socket tells the server its peer's uid, gid and pid (the kernel
vouches for them), and a TLS connection with a verified client certificate
tells it the certificate's subject. For such connections the client calls
``login_anonymous()``; the portal offers the checkers, in this order, a
:class:`ClientCertificate`, then a :class:`UnixPeer`, and only then plain
``Anonymous`` (:func:`credentials_of`). A checker that handles the first
(``syncpb.tls.ClientCertificateChecker``, :class:`UnixPeerChecker`) decides;
the avatar id is the certificate's common name or the unix user's name.
Over TCP there are no unix credentials, so a :class:`UnixPeerChecker`
never lets anyone in there.
"""

from __future__ import annotations

import os
import pwd
from typing import Any, Iterable, List, Optional

from .errors import UnauthorizedLogin

__all__ = ["UnixPeer", "ClientCertificate", "UnixPeerChecker", "credentials_of"]


class UnixPeer:
    """Credentials: the unix-socket peer's identity, from the kernel."""

    def __init__(self, uid: int, gid: int, pid: int) -> None:
        self.uid = uid
        self.gid = gid
        self.pid = pid

    def __repr__(self) -> str:
        return f"<UnixPeer uid={self.uid} gid={self.gid} pid={self.pid}>"


class ClientCertificate:
    """Credentials: the peer's verified TLS client certificate.

    Attributes:
        certificate: what the TLS layer reports (``common_name``,
            ``subject``, ``fingerprint_sha256``).
    """

    def __init__(self, certificate: Any) -> None:
        self.certificate = certificate

    @property
    def common_name(self) -> Optional[str]:
        return getattr(self.certificate, "common_name", None)

    def __repr__(self) -> str:
        return f"<ClientCertificate {self.common_name!r}>"


def credentials_of(peer_info: Any) -> List[Any]:
    """What a connection proves about its peer, strongest first (certificate,
    unix credentials); empty for a plain TCP connection."""
    found: List[Any] = []
    if peer_info is None:
        return found
    if getattr(peer_info, "certificate", None) is not None:
        found.append(ClientCertificate(peer_info.certificate))
    unix = getattr(peer_info, "unix", None)
    if unix is not None:
        found.append(UnixPeer(unix.uid, unix.gid, unix.pid))
    return found


def user_name(uid: int) -> bytes:
    """The user name of ``uid`` (its number, as text, when it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name.encode("utf-8")
    except KeyError:
        return str(uid).encode("ascii")


class UnixPeerChecker:
    """Logs a unix-socket peer in by its uid (avatar id: its user name, bytes).

    A peer is let in when its uid is in ``allowed_uids`` or its gid in
    ``allowed_gids``. With neither given, only the server's own user is.

    Args:
        allowed_uids: user ids let in.
        allowed_gids: group ids let in (the peer's primary group, as the
            kernel reports it).
    """

    credentialInterfaces = (UnixPeer,)  # noqa: N815 - Twisted's name

    def __init__(self, allowed_uids: Optional[Iterable[int]] = None,
                 allowed_gids: Optional[Iterable[int]] = None) -> None:
        if allowed_uids is None and allowed_gids is None:
            allowed_uids = [os.getuid()]
        self.allowed_uids = frozenset(allowed_uids or ())
        self.allowed_gids = frozenset(allowed_gids or ())

    def requestAvatarId(self, credentials: UnixPeer) -> bytes:  # noqa: N802 - Twisted's name
        """The peer's user name, if its uid or gid is allowed.

        Raises:
            UnauthorizedLogin: neither is allowed.
        """
        if credentials.uid in self.allowed_uids or credentials.gid in self.allowed_gids:
            return user_name(credentials.uid)
        raise UnauthorizedLogin(f"unix user {credentials.uid} (group {credentials.gid}) "
                                f"is not allowed")
