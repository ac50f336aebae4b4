"""A real Twisted PB client over TLS and/or a unix socket, for syncpb's
transport interop tests.

Usage::

    python twisted_transport_client.py (--tcp HOST PORT | --unix PATH)
        [--tls --ca PEM [--cert PEM --key PEM] [--hostname NAME]]
        [--only STEP,STEP] [--timeout SECONDS]

Connects with ``pb.PBClientFactory`` through a connector, so that a failed
connection or TLS handshake reaches ``getRootObject()`` as a failure:

* ``--tcp``: ``reactor.connectTCP``, or with ``--tls`` ``reactor.connectSSL``;
* ``--unix``: ``reactor.connectUNIX``, or with ``--tls`` ``connectUNIX`` with
  the factory wrapped in ``TLSMemoryBIOFactory`` (TLS over a unix socket).

TLS settings are ``ssl.optionsForClientTLS(NAME, trustRoot=Certificate(ca),
clientCertificate=PrivateCertificate(cert + key) or None)``; NAME is
``--hostname`` (default ``localhost``), the name the server's certificate
must be valid for.

The steps are ``twisted_client.py``'s (``refs``, ``echo``, ``errors``, ...;
default: ``identity,refs,errors``) plus ``identity``: call the server root's
``peerIdentity()`` and put its answer in the report.

Prints ONE JSON object on stdout and nothing else, ``twisted_client.py``'s
report plus::

    "pid": <this process's pid>,
    "identity": <peerIdentity()'s answer, or null>,
    "tls": null or {"protocol": "TLSv1.3", "server_cn": <CN of the server's
            certificate as this client saw it>},
    "lost_reasons": [why each connection was lost, as the Broker (the
                     protocol above the TLS layer) was told: "<type>: <message>"]

Exit status: 0 when the steps ran to the end (whatever the results), 1 when
the connection or TLS handshake failed (``error`` says why, ``results`` is
empty) or the safety timeout fired (``timed_out`` is true). Twisted's log
goes to stderr.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import twisted  # noqa: E402
from twisted.internet import defer, reactor, ssl  # noqa: E402
from twisted.internet.interfaces import ISSLTransport  # noqa: E402
from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: E402
from twisted.spread import pb  # noqa: E402

import twisted_client  # noqa: E402  (STEPS, Results, settle, call, describe_failure)
from samples import short  # noqa: E402
from tls_helpers import TLS_VERSIONS, common_name, read  # noqa: E402

DEFAULT_STEPS = ["identity", "refs", "errors"]




def tls_options(options):
    """Twisted's client-side TLS settings (IOpenSSLClientConnectionCreator)."""
    client_certificate = None
    if options.cert:
        client_certificate = ssl.PrivateCertificate.loadPEM(
            read(options.cert) + b"\n" + read(options.key))
    return ssl.optionsForClientTLS(
        options.hostname,
        trustRoot=ssl.Certificate.loadPEM(read(options.ca)),
        clientCertificate=client_certificate,
        extraCertificateOptions=(
            {"lowerMaximumSecurityTo": TLS_VERSIONS[options.max_tls]} if options.max_tls
            else None),
    )


def connect(options, factory):
    """Start connecting ``factory`` as the command line says."""
    tls = tls_options(options) if options.tls else None
    if options.unix:
        if tls is not None:
            factory = TLSMemoryBIOFactory(tls, True, factory)  # forwards clientConnection*
        reactor.connectUNIX(options.unix, factory, timeout=10)
    elif tls is not None:
        reactor.connectSSL(options.host, options.port, factory, tls, timeout=10)
    else:
        reactor.connectTCP(options.host, options.port, factory, timeout=10)


def tls_seen(broker):
    """The TLS connection as this client sees it, or None on a plain one."""
    transport = broker.transport
    if not ISSLTransport.providedBy(transport):
        return None
    certificate = transport.getPeerCertificate()
    return {
        "protocol": transport.getHandle().get_protocol_version_name(),
        "server_cn": None if certificate is None else common_name(certificate),
    }


class RecordingBroker(pb.Broker):
    """A Broker that remembers why its connection was lost: over TLS that is
    the TLS layer's reason (e.g. the alert the server sent), where the
    connector reports only that the TCP connection closed."""

    lost_reasons = []

    def connectionLost(self, reason):
        RecordingBroker.lost_reasons.append(twisted_client.describe_failure(reason))
        super().connectionLost(reason)


class Run:
    """Runs the selected steps once and prints the JSON report exactly once."""

    def __init__(self, options):
        self.options = options
        self.results = twisted_client.Results()
        self.steps_run = []
        self.current = None
        self.started = time.monotonic()
        self.exit_code = 0
        self.reported = False
        self.identity = None
        self.tls = None

    def report(self, timed_out=False, error=None):
        if self.reported:
            return
        self.reported = True
        entries = self.results.entries
        document = {
            "results": entries,
            "ok": bool(entries) and all(e["ok"] for e in entries.values()) and not error,
            "steps": self.steps_run,
            "timed_out": timed_out,
            "error": error,
            "elapsed": round(time.monotonic() - self.started, 3),
            "twisted": twisted.__version__,
            "pid": os.getpid(),
            "identity": self.identity,
            "tls": self.tls,
            "lost_reasons": RecordingBroker.lost_reasons,
        }
        sys.stdout.write(json.dumps(document) + "\n")
        sys.stdout.flush()

    def finish(self, exit_code, **report_args):
        if self.reported:
            return
        self.report(**report_args)
        self.exit_code = exit_code
        if reactor.running:
            reactor.stop()

    def on_timeout(self):
        if self.current is not None:
            self.results.record(f"{self.current}.timeout", False,
                                f"step still running after {self.options.timeout}s")
        self.finish(1, timed_out=True)

    @defer.inlineCallbacks
    def step_identity(self, root, results, options):
        ok, identity = yield twisted_client.call(root, "peerIdentity")
        if not ok:
            results.record("identity.call", False,
                           f"failed: {twisted_client.describe_failure(identity)}")
            return
        self.identity = identity
        results.record("identity.call", isinstance(identity, dict), short(identity))

    @defer.inlineCallbacks
    def scenario(self):
        factory = pb.PBClientFactory()
        factory.protocol = RecordingBroker
        connect(self.options, factory)
        ok, root = yield twisted_client.settle(factory.getRootObject)
        if not ok:
            self.finish(1, error=f"connection failed: {twisted_client.describe_failure(root)}")
            return
        self.tls = tls_seen(root.broker)
        steps = dict(twisted_client.STEPS, identity=self.step_identity)
        for name in self.options.only:
            self.current = name
            self.steps_run.append(name)
            try:
                yield steps[name](root, self.results, self.options)
            except Exception as e:  # a bug in a step must not hide other steps
                self.results.record(f"{name}.crashed", False, f"{type(e).__name__}: {e}")
        self.current = None
        factory.disconnect()
        self.finish(0)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", nargs=2, metavar=("HOST", "PORT"))
    where.add_argument("--unix", metavar="PATH")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--ca", help="the CA the server's certificate must chain to")
    parser.add_argument("--cert", help="client certificate to present (PEM)")
    parser.add_argument("--key", help="its private key (PEM)")
    parser.add_argument("--hostname", default="localhost",
                        help="the name the server's certificate must be valid for")
    known = ["identity", *twisted_client.STEPS]
    parser.add_argument("--only", default=",".join(DEFAULT_STEPS),
                        help=f"comma-separated steps, in order (known: {','.join(known)})")
    parser.add_argument("--timeout", type=float, default=30.0, help="safety timeout (s)")
    parser.add_argument("--expect-tracebacks", action="store_true",
                        help="(twisted_client's errors step option)")
    parser.add_argument("--max-tls", choices=["1.2", "1.3"],
                        help="the highest TLS version to speak (lowerMaximumSecurityTo)")
    options = parser.parse_args(argv)
    if options.tls and not options.ca:
        parser.error("--tls needs --ca")
    if bool(options.cert) != bool(options.key):
        parser.error("--cert and --key go together")
    if options.tcp:
        options.host, port = options.tcp
        options.port = int(port)
    options.only = [s for s in options.only.split(",") if s]
    unknown = [s for s in options.only if s not in known]
    if unknown:
        parser.error(f"unknown steps {unknown}; known: {known}")
    return options


def main(argv=None):
    return twisted_client.main(argv, parse=parse_args, run_class=Run)


if __name__ == "__main__":
    sys.exit(main())
