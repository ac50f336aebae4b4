"""twisted: Twisted's own Perspective Broker, server and client in separate
processes, each with the default reactor (epoll on Linux).

Client loops are plain Deferred callbacks (no inlineCallbacks), so Twisted is
not charged for generator plumbing:

* W1/W2/W3/W4: one caller; each answer issues the next ``callRemote``.
* W5: 64 callers -- issue 64 ``callRemote``, each answer issues another.
* W6: Twisted has no natural "16 OS threads share one connection" (the
  reactor is single-threaded), so W6 runs 16 concurrent callers in the
  reactor, i.e. 16 calls outstanding.
"""

from __future__ import annotations

import sys

from . import common
from .common import perf


def _parse_addr(addr):
    if not addr.startswith("tcp://"):
        raise ValueError(f"twisted peer wants tcp://host:port, got {addr!r}")
    host, _, port = addr[len("tcp://"):].rpartition(":")
    return host, int(port)


def serve(host):
    from twisted.internet import reactor
    from twisted.spread import pb

    class Calc(pb.Root):
        def remote_add(self, a, b):
            return a + b

        def remote_echo(self, x):
            return x

    port = reactor.listenTCP(0, pb.PBServerFactory(Calc()), interface=host)
    common.announce(f"tcp://{host}:{port.getHost().port}")
    reactor.run()


def _callers(root, method, argfn, check, concurrency, seconds, max_count):
    """Run ``concurrency`` sequential callers in the reactor until the bounds.

    Each caller issues ``root.callRemote(method, *argfn(i))`` and, on the
    answer, issues its next call. Fires with (completed, elapsed) once every
    caller has stopped (so outstanding calls are drained and counted).
    """
    from twisted.internet import defer

    done = defer.Deferred()
    st = {"issued": 0, "completed": 0, "active": 0, "failed": False}
    t0 = perf()
    end = t0 + seconds

    def fail(f):
        if not st["failed"]:
            st["failed"] = True
            done.errback(f)

    def issue():
        i = st["issued"]
        st["issued"] = i + 1
        d = root.callRemote(method, *argfn(i))
        d.addCallback(answer, i)
        d.addErrback(fail)

    def answer(res, i):
        if st["failed"]:
            return
        check(i, res)  # raising here goes to fail()
        st["completed"] += 1
        if perf() < end and st["issued"] < max_count:
            issue()
        else:
            st["active"] -= 1
            if st["active"] == 0:
                done.callback((st["completed"], perf() - t0))

    n = max(1, min(concurrency, max_count))
    st["active"] = n
    for _ in range(n):
        issue()
    return done


def run_client(workload, addr, opts: common.Options):
    from twisted.internet import reactor
    from twisted.spread import pb

    host, port = _parse_addr(addr)
    out = {}

    if workload in ("W1", "W4", "W5", "W6"):
        method = "add"

        def argfn(i):
            return (i, 1)

        def check(i, r, verify=True):
            common.check_add(i, r)
        conc = {"W5": opts.inflight, "W6": opts.threads}.get(workload, 1)
        nbytes = 0
        mode = {
            "W1": "one caller, each answer issues the next callRemote",
            "W4": "one caller per process, each answer issues the next callRemote",
            "W5": f"{conc} callRemote outstanding, each answer issues another",
            "W6": f"N/A as OS threads: {conc} concurrent callers in the reactor "
                  f"({conc} outstanding)",
        }[workload]
    else:
        method = "echo"
        payload = common.make_records() if workload == "W2" else common.make_blob()
        nbytes = len(payload) if workload == "W3" else 0

        def argfn(i):
            return (payload,)

        def check(i, r, verify=False):
            common.check_echo(payload, r, verify)
        conc = 1
        mode = "one caller, each answer issues the next callRemote"

    def phases(root):
        def warm_check(i, r):
            check(i, r, True)

        def fast_check(i, r):
            check(i, r, False)

        d = _callers(root, method, argfn, warm_check, conc,
                     opts.warmup, opts.warmup_max)

        def go(_):
            common.ready_go()  # blocks the reactor briefly; nothing else runs
            return _callers(root, method, argfn, fast_check, conc,
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
    reactor.connectTCP(host, port, factory, timeout=10)
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
    return common.result(calls, elapsed, mode, nbytes)
