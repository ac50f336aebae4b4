"""Logging in by a verified TLS client certificate, through the Portal.

The client connects with its certificate and calls ``login_anonymous()``:
no secret crosses the wire. The server's Portal hands the certificate the
TLS layer verified (``syncpb.ClientCertificate``) to
:class:`ClientCertificateChecker`; the avatar id is the certificate's
common name. A certificate is only there when the listener's
``server_context(..., ca=...)`` asked for one and it verified against that CA.
"""

from __future__ import annotations

from typing import Iterable, Optional

from syncpb.errors import UnauthorizedLogin
from syncpb.peercheck import ClientCertificate

__all__ = ["ClientCertificateChecker"]


class ClientCertificateChecker:
    """Logs a TLS client in by its certificate's common name (bytes).

    Args:
        allowed_names: common names let in; None lets in every certificate
            the listener's CA verified.
    """

    credentialInterfaces = (ClientCertificate,)  # noqa: N815 - Twisted's name

    def __init__(self, allowed_names: Optional[Iterable[str]] = None) -> None:
        self.allowed_names = None if allowed_names is None else frozenset(allowed_names)

    def requestAvatarId(self, credentials: ClientCertificate) -> bytes:  # noqa: N802
        """The certificate's common name, if allowed.

        Raises:
            UnauthorizedLogin: no common name, or one not allowed.
        """
        name = credentials.common_name
        if not name or (self.allowed_names is not None and name not in self.allowed_names):
            raise UnauthorizedLogin(f"client certificate {name!r} is not allowed")
        return name.encode("utf-8")
