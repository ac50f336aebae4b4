"""syncpb: the subject. Coded against the planned public API only:

    syncpb.Root                       server-side root class (remote_* methods)
    syncpb.Server(root)               .listen("tcp://127.0.0.1:0") -> address
                                      .serve_forever()
    syncpb.connect(addr, timeout=10)  -> connection with .root and .close()
    conn.root.add(a, b)               blocking call
    conn.root.callRemote(name, *args) -> Deferred with .result(timeout=...)
    syncpb.gather([d, ...])           -> Deferred of the list of results

* W1/W4: ``root.add(i, 1)`` in a loop; W2/W3: ``root.echo(payload)``.
* W5: 64 ``root.callRemote("add", i, 1)`` Deferreds kept outstanding: the
  oldest one's ``.result()`` is taken and a new call issued in its place; the
  last window is drained with ``syncpb.gather(ds).result()``.
* W6: 16 ``threading.Thread`` share one ``conn.root`` and call
  ``root.add(i, 1)``.
"""

from __future__ import annotations

import collections

from . import common
from .common import perf

REQUIRED = ("Root", "Server", "connect")


def available():
    """(True, version) or (False, reason) -- never raises."""
    try:
        import syncpb
    except Exception as e:  # noqa: BLE001 - anything means "not available"
        return False, f"{type(e).__name__}: {e}"
    missing = [a for a in REQUIRED if not hasattr(syncpb, a)]
    if missing:
        return False, "syncpb has no " + ", ".join(missing)
    return True, (f"version {getattr(syncpb, '__version__', '?')} "
                  f"from {getattr(syncpb, '__file__', '?')}")


def tune_heap(syncpb) -> str:
    """Raise glibc's heap thresholds as ``syncpb serve`` does (large messages
    then cost no page faults); a note for the report, empty where the
    syncpb measured has no ``tune_malloc`` (an older commit) or it did
    nothing."""
    tune = getattr(syncpb, "tune_malloc", None)
    return "; syncpb.tune_malloc() in both processes" if tune is not None and tune() else ""


def serve(host):
    import syncpb

    class Calc(syncpb.Root):
        def remote_add(self, a, b):
            return a + b

        def remote_echo(self, x):
            return x

    tune_heap(syncpb)
    server = syncpb.Server(Calc())
    addr = server.listen(f"tcp://{host}:0")
    common.announce(addr)
    server.serve_forever()


def run_client(workload, addr, opts: common.Options):
    import syncpb

    tuned = tune_heap(syncpb)
    conn = syncpb.connect(addr, timeout=10)
    try:
        root = conn.root
        if workload in ("W1", "W4"):
            def loop(seconds, max_count, verify):
                def step(i):
                    common.check_add(i, root.add(i, 1))
                return common.sequential(step, seconds, max_count)
            calls, el = common.warm_then_measure(loop, opts)
            return common.result(calls, el, "root.add(i, 1) in a loop" + tuned)

        if workload in ("W2", "W3"):
            payload = common.make_records() if workload == "W2" else common.make_blob()

            def loop(seconds, max_count, verify):
                def step(i):
                    common.check_echo(payload, root.echo(payload), verify)
                return common.sequential(step, seconds, max_count)
            calls, el = common.warm_then_measure(loop, opts)
            return common.result(calls, el, "root.echo(payload) in a loop" + tuned,
                                 len(payload) if workload == "W3" else 0)

        if workload == "W5":
            window = opts.inflight
            timeout = opts.timeout
            gather = getattr(syncpb, "gather", None)

            def loop(seconds, max_count, verify):
                pending = collections.deque()
                issued = done = 0
                t0 = perf()
                end = t0 + seconds
                while issued < min(window, max_count):
                    pending.append((issued, root.callRemote("add", issued, 1)))
                    issued += 1
                while pending:
                    i, d = pending.popleft()
                    common.check_add(i, d.result(timeout=timeout))
                    done += 1
                    if issued < max_count and perf() < end:
                        pending.append((issued, root.callRemote("add", issued, 1)))
                        issued += 1
                    elif pending:
                        # stop issuing: drain the rest of the window at once
                        ids = [j for j, _ in pending]
                        ds = [d for _, d in pending]
                        pending.clear()
                        if gather is not None:
                            results = gather(ds).result(timeout=timeout)
                        else:
                            results = [d.result(timeout=timeout) for d in ds]
                        for j, r in zip(ids, results):
                            common.check_add(j, r)
                        done += len(ds)
                return done, perf() - t0
            calls, el = common.warm_then_measure(loop, opts)
            how = "syncpb.gather" if gather is not None else "per-Deferred .result() (no syncpb.gather)"
            return common.result(calls, el, f"{window} callRemote Deferreds outstanding, "
                                 f"oldest .result() then refill; drain with {how}" + tuned)

        if workload == "W6":
            def make_step(t):
                def step(i):
                    common.check_add(i, root.add(i, 1))
                return step
            calls, el = common.ThreadGroup.measure(opts.threads, make_step, opts)
            return common.result(calls, el, f"{opts.threads} threading.Threads share "
                                 "one conn.root, root.add(i, 1)" + tuned)
        raise ValueError(f"unknown workload {workload}")
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - closing is best effort here
            pass
