"""Log in to the notes service by client certificate; show two refused clients.

    python client.py tls+unix:///abs/path/certs/pb.sock certs

uses ``certs/ca.pem`` (to check the server), ``certs/client.pem`` and
``certs/client.key`` (to prove who we are).
"""

from __future__ import annotations

import os
import sys

import syncpb
from syncpb import tls

#: The name in the server's certificate. A unix socket has no host name to
#: check the certificate against, so the client names the server it expects.
SERVER_NAME = "pb.internal"


def client_tls(cert_dir: str) -> tls.ClientTLS:
    """Trust our CA for the server, present our certificate, expect pb.internal."""
    return tls.client_context(ca=os.path.join(cert_dir, "ca.pem"),
                              cert=os.path.join(cert_dir, "client.pem"),
                              key=os.path.join(cert_dir, "client.key"),
                              server_hostname=SERVER_NAME)


def main(address: str, cert_dir: str) -> None:
    with syncpb.connect(address, timeout=10, tls=client_tls(cert_dir)) as conn:
        notes = conn.login_anonymous(timeout=10)  # no password: the certificate is the login
        print("logged in as:", notes.whoami())
        print("added note", notes.add_note("TLS over a unix socket"))
        d = notes.callRemote("add_note", "logged in by certificate")  # callback style too
        print("added note", d.result(timeout=10))
        print("notes:", notes.notes())


def refusals(address: str, cert_dir: str) -> None:
    """Two clients the TLS handshake refuses, before any PB byte is exchanged."""
    no_cert = tls.client_context(ca=os.path.join(cert_dir, "ca.pem"),
                                 server_hostname=SERVER_NAME)
    try:
        syncpb.connect(address, timeout=10, tls=no_cert).close()
        print("no client certificate: let in?!")
    except syncpb.ClientCertificateRequired:
        print("no client certificate: refused (ClientCertificateRequired)")

    # A client that trusts another CA (its own): the server's certificate,
    # signed by the development CA, does not chain to it.
    other_ca = tls.make_ca("another CA")
    stranger = tls.client_context(ca=other_ca.cert_pem,  # PEM bytes work as well as paths
                                  cert=os.path.join(cert_dir, "client.pem"),
                                  key=os.path.join(cert_dir, "client.key"),
                                  server_hostname=SERVER_NAME)
    try:
        syncpb.connect(address, timeout=10, tls=stranger).close()
        print("server from an untrusted CA: accepted?!")
    except syncpb.CertificateUntrusted:
        print("server from an untrusted CA: refused (CertificateUntrusted)")


if __name__ == "__main__":
    certs = sys.argv[2] if len(sys.argv) > 2 else "certs"
    main(sys.argv[1], certs)
    refusals(sys.argv[1], certs)
