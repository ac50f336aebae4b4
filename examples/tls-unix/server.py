"""A notes service over TLS on a unix socket; clients log in by certificate.

    python -m syncpb tls init certs --host pb.internal --client-name alice
    python server.py certs

serves ``tls+unix://certs/pb.sock`` (mode 0600) with ``certs/server.pem``
and ``certs/server.key``, and lets in any client whose certificate
``certs/ca.pem`` signed; it prints its address, then serves until its stdin
closes (or Ctrl-C).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Dict, List, Optional

import syncpb
from syncpb import tls

SOCKET = "pb.sock"


class Notebook(syncpb.Avatar):
    """What a logged-in user reaches: their own notes, perspective_ methods only."""

    def __init__(self, name: str, notes: List[str]) -> None:
        self.name = name
        self._notes = notes

    def perspective_whoami(self) -> str:
        return self.name

    def perspective_add_note(self, text: str) -> int:
        self._notes.append(text)
        return len(self._notes)

    def perspective_notes(self) -> List[str]:
        return list(self._notes)


class NotesRealm:
    """One notebook per user; the user is the avatar id, the certificate's
    common name as ``ClientCertificateChecker`` gives it (bytes)."""

    def __init__(self) -> None:
        self.notebooks: Dict[str, List[str]] = {}
        self.seen: List[str] = []  # what happened, for the demo to show

    def requestAvatar(self, avatar_id, mind, *interfaces):  # noqa: N802 - Twisted's name
        name = avatar_id.decode("utf-8")
        self.seen.append(f"{name} logged in (avatar id {avatar_id!r})")
        avatar = Notebook(name, self.notebooks.setdefault(name, []))
        return syncpb.IPerspective, avatar, lambda: self.seen.append(f"{name} logged out")


def make_server(allowed_names: Optional[List[str]] = None) -> syncpb.Server:
    """A server whose root is a Portal that logs clients in by certificate.

    ``require_client_cert=True`` refuses, in the TLS handshake, any client
    without a certificate signed by ``ca.pem``; the checker then turns the
    verified certificate's common name into the avatar id (only names in
    ``allowed_names``, if given).
    """
    portal = syncpb.Portal(NotesRealm(), [tls.ClientCertificateChecker(allowed_names)])
    return syncpb.Server(portal)


def server_tls(cert_dir: str) -> tls.ServerTLS:
    """The server's certificate and key, and the CA client certificates must chain to."""
    return tls.server_context(os.path.join(cert_dir, "server.pem"),
                              os.path.join(cert_dir, "server.key"),
                              ca=os.path.join(cert_dir, "ca.pem"),
                              require_client_cert=True)


def listen(server: syncpb.Server, cert_dir: str) -> str:
    """Listen on ``tls+unix://<cert_dir>/pb.sock``, for this user only (0600)."""
    path = os.path.join(os.path.abspath(cert_dir), SOCKET)
    return server.listen(f"tls+unix://{path}", tls=server_tls(cert_dir), mode=0o600)


def main(argv: List[str]) -> None:
    cert_dir = argv[1] if len(argv) > 1 else "certs"
    server = make_server()
    try:
        print(listen(server, cert_dir), flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv)
