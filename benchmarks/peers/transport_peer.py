"""Servers and clients of ``benchmarks/transports.py``: syncpb and Twisted PB
over TCP, a unix socket, TLS over TCP and TLS over a unix socket.

Addresses are written the syncpb way for both peers: ``tcp://host:port``,
``unix:///path``, ``tls://host:port``, ``tls+unix:///path``. The TLS material
is a development set from ``syncpb.tls.write_dev_set(dir, ["localhost",
"127.0.0.1"])`` (``ca.pem``, ``server.pem``, ``server.key``); both clients
trust ``ca.pem`` only and check the server's name ``localhost``.

* syncpb server: ``syncpb.Server(Calc()).listen(address, tls=
  syncpb.tls.server_context(cert=, key=))`` then ``serve_forever()``; client:
  ``syncpb.connect(address, timeout=10, tls=syncpb.tls.client_context(ca=,
  server_hostname="localhost"))``; W1 ``root.add(i, 1)``, W2/W3
  ``root.echo(payload)`` in a loop (as ``peers/syncpb_peer.py``).
* Twisted server: ``pb.PBServerFactory(Calc())`` on ``reactor.listenTCP`` /
  ``listenUNIX`` / ``listenSSL`` (``PrivateCertificate.options()``, i.e.
  ``CertificateOptions``) / ``listenUNIX`` of a ``TLSMemoryBIOFactory`` wrapping
  the PB factory; client: ``pb.PBClientFactory`` on ``connectTCP`` /
  ``connectUNIX`` / ``connectSSL`` with ``ssl.optionsForClientTLS("localhost",
  trustRoot=ca)`` / ``connectUNIX`` of a ``TLSMemoryBIOFactory`` (client side)
  wrapping it. Each answer issues the next ``callRemote`` (as
  ``peers/twisted_peer.py``, whose ``_callers`` loop is reused).

Each client also reports what its TLS connection negotiated (version and
cipher), read from the OpenSSL connection object.
"""

from __future__ import annotations

import os
import sys

from . import common

TRANSPORTS = ("tcp", "unix", "tls", "tls+unix")
SERVER_NAME = "localhost"  # the name both TLS clients check


def _sock_path(sockdir, peer):
    return os.path.join(sockdir, f"{peer}-{os.getpid()}.sock")


def _split(addr):
    """'tls+unix:///p' -> ('tls+unix', '/p'); 'tcp://h:1' -> ('tcp', ('h', 1))."""
    scheme, sep, rest = addr.partition("://")
    if not sep or scheme not in TRANSPORTS:
        raise ValueError(f"unknown address {addr!r}")
    if scheme.endswith("unix"):
        return scheme, rest
    host, _, port = rest.rpartition(":")
    return scheme, (host, int(port))


def _cipher_of(conn):
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' from an OpenSSL.SSL.Connection."""
    if conn is None or not hasattr(conn, "get_cipher_name"):
        return ""
    try:
        return f"{conn.get_protocol_version_name()} {conn.get_cipher_name()}"
    except Exception:  # noqa: BLE001 - informative only
        return ""


# ================================================================ syncpb

def syncpb_serve(transport, host, sockdir, certdir):
    import syncpb

    class Calc(syncpb.Root):
        def remote_add(self, a, b):
            return a + b

        def remote_echo(self, x):
            return x

    server = syncpb.Server(Calc())
    tls = None
    if transport.startswith("tls"):
        import syncpb.tls
        tls = syncpb.tls.server_context(cert=os.path.join(certdir, "server.pem"),
                                        key=os.path.join(certdir, "server.key"))
    if transport.endswith("unix"):
        address = f"{transport}://{_sock_path(sockdir, 'syncpb')}"
    else:
        address = f"{transport}://{host}:0"
    addr = server.listen(address, tls=tls)
    common.announce(addr)
    server.serve_forever()


def syncpb_client(workload, addr, opts: common.Options, certdir):
    import syncpb

    tls = None
    if addr.startswith("tls"):
        import syncpb.tls
        tls = syncpb.tls.client_context(ca=os.path.join(certdir, "ca.pem"),
                                        server_hostname=SERVER_NAME)
    conn = syncpb.connect(addr, timeout=10, tls=tls)
    try:
        root = conn.root
        # informative: the negotiated TLS parameters (private attributes, best effort)
        engine = getattr(getattr(getattr(conn, "_session", None), "sock", None), "_engine", None)
        cipher = _cipher_of(getattr(engine, "_connection", None))
        if workload == "W1":
            def loop(seconds, max_count, verify):
                def step(i):
                    common.check_add(i, root.add(i, 1))
                return common.sequential(step, seconds, max_count)
            calls, el = common.warm_then_measure(loop, opts)
            return common.result(calls, el, "root.add(i, 1) in a loop", tls=cipher)
        if workload in ("W2", "W3"):
            payload = common.make_records() if workload == "W2" else common.make_blob()

            def loop(seconds, max_count, verify):
                def step(i):
                    common.check_echo(payload, root.echo(payload), verify)
                return common.sequential(step, seconds, max_count)
            calls, el = common.warm_then_measure(loop, opts)
            return common.result(calls, el, "root.echo(payload) in a loop",
                                 len(payload) if workload == "W3" else 0, tls=cipher)
        raise ValueError(f"transports benchmark has no workload {workload}")
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing is best effort here
            pass


# ================================================================ Twisted

def _twisted_server_options(certdir):
    from twisted.internet import ssl
    with open(os.path.join(certdir, "server.pem")) as f:
        cert = f.read()
    with open(os.path.join(certdir, "server.key")) as f:
        key = f.read()
    return ssl.PrivateCertificate.loadPEM(cert + key).options()


def _twisted_client_options(certdir):
    from twisted.internet import ssl
    with open(os.path.join(certdir, "ca.pem")) as f:
        ca = ssl.Certificate.loadPEM(f.read())
    return ssl.optionsForClientTLS(SERVER_NAME, trustRoot=ca)


def twisted_serve(transport, host, sockdir, certdir):
    from twisted.internet import reactor
    from twisted.spread import pb

    class Calc(pb.Root):
        def remote_add(self, a, b):
            return a + b

        def remote_echo(self, x):
            return x

    factory = pb.PBServerFactory(Calc())
    if transport == "tcp":
        port = reactor.listenTCP(0, factory, interface=host)
        addr = f"tcp://{host}:{port.getHost().port}"
    elif transport == "tls":
        port = reactor.listenSSL(0, factory, _twisted_server_options(certdir), interface=host)
        addr = f"tls://{host}:{port.getHost().port}"
    elif transport == "unix":
        path = _sock_path(sockdir, "twisted")
        reactor.listenUNIX(path, factory, mode=0o600)
        addr = f"unix://{path}"
    elif transport == "tls+unix":
        from twisted.protocols.tls import TLSMemoryBIOFactory
        path = _sock_path(sockdir, "twisted")
        wrapped = TLSMemoryBIOFactory(_twisted_server_options(certdir), False, factory)
        reactor.listenUNIX(path, wrapped, mode=0o600)
        addr = f"tls+unix://{path}"
    else:
        raise ValueError(f"unknown transport {transport}")
    common.announce(addr)
    reactor.run()


def twisted_client(workload, addr, opts: common.Options, certdir):
    from twisted.internet import reactor
    from twisted.spread import pb

    from .twisted_peer import _callers

    if workload == "W1":
        method = "add"

        def argfn(i):
            return (i, 1)

        def check(i, r, verify):
            common.check_add(i, r)
        nbytes = 0
    elif workload in ("W2", "W3"):
        method = "echo"
        payload = common.make_records() if workload == "W2" else common.make_blob()
        nbytes = len(payload) if workload == "W3" else 0

        def argfn(i):
            return (payload,)

        def check(i, r, verify):
            common.check_echo(payload, r, verify)
    else:
        raise ValueError(f"transports benchmark has no workload {workload}")
    mode = "one caller, each answer issues the next callRemote"
    out = {}

    def phases(root):
        try:
            out["tls"] = _cipher_of(root.broker.transport.getHandle())
        except Exception:  # noqa: BLE001 - informative only
            out["tls"] = ""
        d = _callers(root, method, argfn, lambda i, r: check(i, r, True), 1,
                     opts.warmup, opts.warmup_max)

        def go(_):
            common.ready_go()  # blocks the reactor briefly; nothing else runs
            return _callers(root, method, argfn, lambda i, r: check(i, r, False), 1,
                            opts.seconds, opts.max_count)
        d.addCallback(go)
        return d

    def finished(res):
        out["result"] = res

    def failed(f):
        out["error"] = f

    def stop(_):
        if reactor.running:
            reactor.stop()

    factory = pb.PBClientFactory()
    scheme, where = _split(addr)
    if scheme == "tcp":
        reactor.connectTCP(where[0], where[1], factory, timeout=10)
    elif scheme == "tls":
        reactor.connectSSL(where[0], where[1], factory, _twisted_client_options(certdir),
                           timeout=10)
    elif scheme == "unix":
        reactor.connectUNIX(where, factory, timeout=10)
    else:  # tls+unix
        from twisted.protocols.tls import TLSMemoryBIOFactory
        reactor.connectUNIX(where, TLSMemoryBIOFactory(_twisted_client_options(certdir),
                                                       True, factory), timeout=10)
    d = factory.getRootObject()
    d.addCallback(phases)
    d.addCallbacks(finished, failed)
    d.addBoth(stop)
    reactor.callLater(opts.warmup + opts.seconds + 300 + opts.timeout,
                      lambda: (out.setdefault("error", "client timed out"), stop(None)))
    reactor.run(installSignalHandlers=False)

    if "error" in out:
        err = out["error"]
        if hasattr(err, "getTraceback"):
            sys.stderr.write(err.getTraceback())
            raise common.BenchError(f"twisted client failed: {err.getErrorMessage()}")
        raise common.BenchError(str(err))
    calls, elapsed = out["result"]
    return common.result(calls, elapsed, mode, nbytes, tls=out.get("tls", ""))


SERVERS = {"syncpb": syncpb_serve, "twisted": twisted_serve}
CLIENTS = {"syncpb": syncpb_client, "twisted": twisted_client}
