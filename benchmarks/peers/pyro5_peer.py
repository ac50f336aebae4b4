"""pyro5: Pyro5 with its msgpack serializer on both sides.

Server: ``Pyro5.api.Daemon(host="127.0.0.1", port=0)`` with the default
thread-pool server type, one shared ``Calc`` instance registered without a
name (``daemon.register(obj)`` gives a direct ``PYRO:obj_...@host:port``
URI; no name server is involved). msgpack keeps ``bytes`` as bytes (bin type)
and ``str`` as str, and returns lists for tuples.

Client: ``Pyro5.api.Proxy(uri)``, calls ``proxy.add(i, 1)``.

* W5: Pyro5 proxies do not allow several calls in flight on one connection;
  its own way of putting many calls on one connection at once is
  ``Pyro5.api.BatchProxy``: 64 calls go out in one request and come back in one
  reply (``--pyro5-w5 batch``, the default). ``--pyro5-w5 threads`` instead
  runs 64 threads each with its own proxy (64 connections).
* W6: a proxy may not be shared by threads (without passing ownership around),
  so 16 threads each own a proxy -- 16 connections, not one.
"""

from __future__ import annotations

from . import common
from .common import perf


def _config():
    import Pyro5  # Pyro5.config is the global Configuration object, not a module
    Pyro5.config.SERIALIZER = "msgpack"
    return Pyro5.config


def serve(host):
    _config()
    import Pyro5.api

    @Pyro5.api.expose
    class Calc:
        def add(self, a, b):
            return a + b

        def echo(self, x):
            return x

    daemon = Pyro5.api.Daemon(host=host, port=0)
    uri = daemon.register(Calc())
    common.announce(str(uri))
    daemon.requestLoop()


def run_client(workload, addr, opts: common.Options):
    cfg = _config()
    import Pyro5.api

    def new_proxy():
        p = Pyro5.api.Proxy(addr)
        p._pyroTimeout = opts.timeout
        p._pyroBind()
        return p

    if workload in ("W1", "W4", "W2", "W3"):
        proxy = new_proxy()
        if workload in ("W1", "W4"):
            def loop(seconds, max_count, verify):
                def step(i):
                    common.check_add(i, proxy.add(i, 1))
                return common.sequential(step, seconds, max_count)
            nbytes = 0
            mode = "one proxy, proxy.add(i, 1) in a loop"
        else:
            payload = common.make_records() if workload == "W2" else common.make_blob()
            nbytes = len(payload) if workload == "W3" else 0

            def loop(seconds, max_count, verify):
                def step(i):
                    common.check_echo(payload, proxy.echo(payload), verify)
                return common.sequential(step, seconds, max_count)
            mode = "one proxy, proxy.echo(payload) in a loop"
        try:
            calls, el = common.warm_then_measure(loop, opts)
        finally:
            proxy._pyroRelease()
        return common.result(calls, el, mode + f" [{cfg.SERIALIZER}]", nbytes)

    if workload == "W5" and opts.pyro5_w5 == "batch":
        proxy = new_proxy()
        n = opts.inflight

        def loop(seconds, max_count, verify):
            batch = Pyro5.api.BatchProxy(proxy)
            calls = 0
            t0 = perf()
            end = t0 + seconds
            while calls < max_count:
                for i in range(calls, calls + n):
                    batch.add(i, 1)
                for i, r in enumerate(batch(), calls):
                    common.check_add(i, r)
                calls += n
                if perf() >= end:
                    break
            return calls, perf() - t0
        try:
            calls, el = common.warm_then_measure(loop, opts)
        finally:
            proxy._pyroRelease()
        return common.result(calls, el, f"BatchProxy: {n} add calls per batch "
                             f"(one request, one reply) on one proxy [{cfg.SERIALIZER}]")

    if workload in ("W5", "W6"):
        nthreads = opts.inflight if workload == "W5" else opts.threads
        proxies = []

        def make_step(t):
            p = new_proxy()  # created in, and so owned by, thread t
            proxies.append(p)

            def step(i):
                common.check_add(i, p.add(i, 1))
            return step
        calls, el = common.ThreadGroup.measure(nthreads, make_step, opts)
        return common.result(calls, el, f"{nthreads} threads, each with its own "
                             f"proxy/connection [{cfg.SERIALIZER}]")

    raise ValueError(f"unknown workload {workload}")
