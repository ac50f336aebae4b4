"""A real Twisted PB server on TLS and/or a unix socket, for syncpb's
transport interop tests.

Usage::

    python twisted_transport_server.py [--unix PATH]
        [--tls --cert PEM --key PEM [--ca PEM] [--client-cert none|optional|required]]

Listens on an ephemeral port on 127.0.0.1 (or, with ``--unix``, on the unix
socket PATH, mode 0600), prints exactly one line to stdout::

    READY tcp <port>        or        READY unix <path>

then serves until stdin reaches EOF (the parent closes it) or SIGTERM/SIGINT.
Twisted's log goes to stderr.

With ``--tls`` the listener speaks TLS with Twisted's own TLS stack:
``reactor.listenSSL`` for TCP, ``TLSMemoryBIOFactory`` over ``listenUNIX`` for
a unix socket, both with ``ssl.CertificateOptions`` built from the given PEM
files. ``--client-cert``:

``none`` (default)
    clients are not asked for a certificate;
``optional``
    ``CertificateOptions(verify=True, caCerts=[ca], requireCertificate=False)``:
    a certificate is asked for and, when sent, must chain to ``--ca``;
``required``
    ``CertificateOptions(trustRoot=ca)`` (which requires one): a client
    without a certificate signed by ``--ca`` is refused.

The root objects are ``twisted_server.ConnectionRoot``'s (echo, add, getRef,
failValue, ... see ``twisted_server.py``) plus:

    peerIdentity() -> {"tls": bool, "protocol": "TLSv1.3" | None,
                       "cn": the client certificate's CN or None,
                       "transport": the transport's class name}

and every ``peerIdentity()`` call also logs ``PEER IDENTITY cn=<cn> tls=<bool>``.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from twisted.internet import reactor, ssl  # noqa: E402
from twisted.internet.interfaces import ISSLTransport  # noqa: E402
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver  # noqa: E402
from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: E402
from twisted.spread import pb  # noqa: E402

import twisted_server  # noqa: E402  (ConnectionRoot, stop_on_stdin_eof)
from tls_helpers import TLS_VERSIONS, common_name, read  # noqa: E402

log = Logger(namespace="twisted_transport_server")


def peer_identity(transport):
    """What this end knows of the peer: TLS or not, and its certificate's CN."""
    if not ISSLTransport.providedBy(transport):
        return {"tls": False, "protocol": None, "cn": None,
                "transport": type(transport).__name__}
    certificate = transport.getPeerCertificate()  # OpenSSL.crypto.X509 or None
    cn = None if certificate is None else common_name(certificate)
    return {"tls": True, "protocol": transport.getHandle().get_protocol_version_name(),
            "cn": cn, "transport": type(transport).__name__}


class TransportRoot(twisted_server.ConnectionRoot):
    """twisted_server's per-connection root, plus peerIdentity()."""

    def remote_peerIdentity(self):
        identity = peer_identity(self.broker.transport)
        log.info("PEER IDENTITY cn={cn} tls={tls}", cn=identity["cn"], tls=identity["tls"])
        return identity


class RootProvider(pb.Root):
    def rootObject(self, broker):
        return TransportRoot(broker)




def certificate_options(options):
    """Twisted's server-side TLS settings from the command line."""
    identity = ssl.PrivateCertificate.loadPEM(read(options.cert) + b"\n" + read(options.key))
    settings = {"privateKey": identity.privateKey.original, "certificate": identity.original}
    if options.client_cert != "none":
        if options.ca is None:
            raise SystemExit("--client-cert optional|required needs --ca")
        ca = ssl.Certificate.loadPEM(read(options.ca))
        if options.client_cert == "required":
            settings["trustRoot"] = ca  # implies verify=True, requireCertificate=True
        else:
            settings.update(verify=True, caCerts=[ca.original], requireCertificate=False)
    if options.max_tls:
        settings["lowerMaximumSecurityTo"] = TLS_VERSIONS[options.max_tls]
    return ssl.CertificateOptions(**settings)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unix", metavar="PATH", help="listen on this unix socket")
    parser.add_argument("--tls", action="store_true", help="speak TLS")
    parser.add_argument("--cert", help="server certificate (PEM)")
    parser.add_argument("--key", help="its private key (PEM)")
    parser.add_argument("--ca", help="the CA client certificates must chain to (PEM)")
    parser.add_argument("--client-cert", choices=["none", "optional", "required"],
                        default="none")
    parser.add_argument("--max-tls", choices=["1.2", "1.3"],
                        help="the highest TLS version to speak (lowerMaximumSecurityTo)")
    options = parser.parse_args(argv)
    if options.tls and not (options.cert and options.key):
        parser.error("--tls needs --cert and --key")
    return options


def main(argv=None):
    options = parse_args(argv)
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    factory = pb.PBServerFactory(RootProvider())
    tls = certificate_options(options) if options.tls else None
    if options.unix:
        if tls is not None:
            factory = TLSMemoryBIOFactory(tls, False, factory)
        port = reactor.listenUNIX(options.unix, factory, mode=0o600)
        ready = f"READY unix {options.unix}"
    else:
        if tls is not None:
            port = reactor.listenSSL(0, factory, tls, interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ready = f"READY tcp {port.getHost().port}"

    def announce():
        # Once the reactor runs (and has its signal handlers), as twisted_server does.
        sys.stdout.write(ready + "\n")
        sys.stdout.flush()
        twisted_server.stop_on_stdin_eof()

    reactor.callWhenRunning(announce)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
