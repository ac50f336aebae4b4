"""A real Twisted PB client that runs a fixed interop scenario.

Usage::

    python twisted_client.py HOST PORT [--only STEP,STEP] [--timeout SECONDS]
                                       [--expect-tracebacks]

Connects with ``pb.PBClientFactory``, gets the root object and runs the steps
below against it (``large`` only when asked for with ``--only``). The
server's root must offer the methods documented in ``twisted_server.py``
(syncpb's test server offers the same ones).

Prints ONE JSON object on stdout and nothing else::

    {"results": {"<step>.<check>": {"ok": true|false, "detail": "<text>"}, ...},
     "ok": <all results ok>, "steps": [<steps run>], "timed_out": false,
     "error": null, "elapsed": <seconds>, "twisted": "<version>"}

Exit status: 0 when the scenario ran to the end (whatever the results),
1 when the connection failed (``error`` says why, ``results`` is empty) or
the safety timeout fired (``timed_out`` is true; ``results`` holds what
finished plus a failed ``<step>.timeout`` entry). Twisted's log goes to
stderr.
"""

import argparse
import gc
import json
import os
import sys
import time
import weakref

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import twisted  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.logger import globalLogBeginner, textFileLogObserver  # noqa: E402
from twisted.python import reflect  # noqa: E402
from twisted.spread import pb, util  # noqa: E402

import interop_types  # noqa: E402
import samples  # noqa: E402
from samples import mismatch, short, structure_problem  # noqa: E402


# -- helpers -----------------------------------------------------------------


def type_name(failure):
    """The failure's exception type as text (a CopiedFailure holds bytes)."""
    kind = failure.type
    if isinstance(kind, bytes):
        return kind.decode("utf-8", "replace")
    if isinstance(kind, type):
        return reflect.qual(kind)
    return str(kind)


def settle(callable_, *args, **kwargs):
    """Call, and fire with (True, result) or (False, failure); never fails.
    Synchronous exceptions (e.g. DeadReferenceError) count as failures."""
    d = defer.maybeDeferred(callable_, *args, **kwargs)
    return d.addCallbacks(lambda v: (True, v), lambda f: (False, f))


def call(ref, name, *args, **kwargs):
    return settle(ref.callRemote, name, *args, **kwargs)


def wait_until(predicate, timeout, interval=0.01):
    """Fire with True once predicate() is true, or False after `timeout`."""
    deadline = time.monotonic() + timeout

    @defer.inlineCallbacks
    def poll():
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            yield task.deferLater(reactor, interval, lambda: None)
        return True

    return poll()


class Results:
    """Collects {name: {"ok": bool, "detail": str}} in insertion order."""

    def __init__(self):
        self.entries = {}

    def record(self, name, ok, detail=""):
        self.entries[name] = {"ok": bool(ok), "detail": str(detail)}

    def expect_value(self, name, outcome, expected):
        """Record whether a settle() outcome succeeded with `expected`."""
        ok, value = outcome
        if not ok:
            self.record(name, False, f"failed: {describe_failure(value)}")
            return
        problem = mismatch(expected, value)
        self.record(name, problem is None, problem or f"got {short(value)}")

    def expect_failure(self, name, outcome):
        """Return the failure if the call failed; else record and return None."""
        ok, value = outcome
        if ok:
            self.record(name, False, f"expected a failure, got {short(value)}")
            return None
        return value


def describe_failure(failure):
    return f"{type_name(failure)}: {failure.getErrorMessage()}"


class Stepper(pb.Referenceable):
    """The client-side object the server calls back."""

    def remote_step(self, x):
        return x * 2

    def remote_describe(self, *args, **kw):
        return [list(args), kw]


# -- scenario steps -----------------------------------------------------------
# Each step is an inlineCallbacks generator taking (root, results, options).


@defer.inlineCallbacks
def step_refs(root, results, options):
    """getRef / hello / isSame / refCount before and after our decref."""
    results.expect_value("refs.refCount_initial", (yield call(root, "refCount")), 0)
    ok, ref = yield call(root, "getRef")
    if not ok or not isinstance(ref, pb.RemoteReference):
        detail = describe_failure(ref) if not ok else f"got {short(ref)}"
        results.record("refs.getRef", False, detail)
        return
    results.record("refs.getRef", True, f"RemoteReference luid={ref.luid!r}")
    results.expect_value("refs.hello", (yield call(ref, "hello", "bob")), "hello bob")
    results.expect_value("refs.isSame", (yield call(root, "isSame", ref, ref)), True)
    results.expect_value("refs.refCount_held", (yield call(root, "refCount")), 1)

    alive = weakref.ref(ref)
    del ref
    gc.collect()  # the RemoteReference's __del__ sends ['decref', id]
    results.record(
        "refs.proxy_released",
        alive() is None,
        "RemoteReference collected" if alive() is None else "still referenced",
    )
    results.expect_value("refs.refCount_dropped", (yield call(root, "refCount")), 0)


@defer.inlineCallbacks
def step_echo(root, results, options):
    """echo() round trip of every sample value, plus echoKw/echoArgs/add."""
    for name, value in interop_types.sample_values().items():
        outcome = yield call(root, "echo", value)
        results.expect_value(f"echo.{name}", outcome, value)
        problem = outcome[0] and structure_problem(name, outcome[1])
        if problem:
            results.record(f"echo.{name}", False, problem)
    results.expect_value(
        "echo.echoKw", (yield call(root, "echoKw", a=1, b="x")), {"a": 1, "b": "x"}
    )
    results.expect_value(
        "echo.echoArgs",
        (yield call(root, "echoArgs", 1, "x", b"y", k=2)),
        [[1, "x", b"y"], {"k": 2}],
    )
    results.expect_value("echo.add", (yield call(root, "add", 2, 3)), 5)


@defer.inlineCallbacks
def step_types(root, results, options):
    """types() compared with sample_values(); cycle() and shared()."""
    expected = interop_types.sample_values()
    ok, got = yield call(root, "types")
    if not ok or not isinstance(got, dict):
        detail = describe_failure(got) if not ok else f"got {short(got)}"
        results.record("types.call", False, detail)
    else:
        results.record("types.call", True, f"{len(got)} keys")
        for name, value in expected.items():
            if name not in got:
                results.record(f"types.{name}", False, "key missing")
                continue
            problem = mismatch(value, got[name]) or structure_problem(name, got[name])
            results.record(f"types.{name}", problem is None, problem or short(got[name]))
        extra = sorted(set(got) - set(expected), key=repr)
        results.record("types.no_extra_keys", not extra, f"extra keys: {extra!r}")
    for name in ("cycle", "shared"):
        outcome = yield call(root, name)
        expected_value = getattr(interop_types, f"make_{name}")()
        results.expect_value(f"types.{name}()", outcome, expected_value)
        problem = outcome[0] and structure_problem(name, outcome[1])
        if problem:
            results.record(f"types.{name}()", False, problem)


@defer.inlineCallbacks
def step_errors(root, results, options):
    """Remote exceptions arrive as failures with the right type and text."""
    f = results.expect_failure("errors.failValue", (yield call(root, "failValue")))
    if f is not None:
        ok = bool(f.check(ValueError)) and f.getErrorMessage() == "bad value"
        results.record("errors.failValue", ok, describe_failure(f))
        if options.expect_tracebacks:
            text = getattr(f, "traceback", None)
            ok = isinstance(text, str) and "bad value" in text and "Traceback" in text
            results.record("errors.unsafeTraceback", ok, short(text))

    f = results.expect_failure("errors.failPbError", (yield call(root, "failPbError")))
    if f is not None:
        ok = (
            bool(f.check(pb.Error))
            and type_name(f) == "interop_types.MyError"
            and f.getErrorMessage() == "custom pb error"
        )
        results.record("errors.failPbError", ok, f"{describe_failure(f)} type={f.type!r}")

    f = results.expect_failure("errors.failDeferred", (yield call(root, "failDeferred")))
    if f is not None:
        results.record("errors.failDeferred", bool(f.check(KeyError)), describe_failure(f))

    f = results.expect_failure("errors.failCopyable", (yield call(root, "failCopyable")))
    if f is not None:
        value = f.value
        ok = (
            isinstance(value, interop_types.RemoteCopyableError)
            and getattr(value, "message", None) == "copyable pb error"
            and getattr(value, "code", None) == 17
            and bool(f.check(interop_types.CopyableError))
        )
        state = getattr(value, "__dict__", value)
        results.record(
            "errors.failCopyable", ok, f"{type(value).__name__} state={short(state)}"
        )

    f = results.expect_failure("errors.noSuchMethod", (yield call(root, "noSuchMethod")))
    if f is not None:
        results.record(
            "errors.noSuchMethod", "NoSuchMethod" in type_name(f), describe_failure(f)
        )


@defer.inlineCallbacks
def step_callbacks(root, results, options):
    """The server calls methods of a client Referenceable we pass it."""
    stepper = Stepper()
    results.expect_value(
        "callbacks.callMeBack", (yield call(root, "callMeBack", stepper, 21)), 42
    )
    results.expect_value(
        "callbacks.callMeBackKw",
        (yield call(root, "callMeBackKw", stepper, "describe", 1, "a", k=b"v")),
        [[1, "a"], {"k": b"v"}],
    )


def exported(broker, obj):
    """Is obj in this broker's table of objects exported to the peer?"""
    return any(entry.object is obj for entry in (broker.localObjects or {}).values())


@defer.inlineCallbacks
def step_store(root, results, options):
    """The server keeps our reference, uses it, drops it; its decref frees
    the entry in our broker's export table."""
    broker = root.broker
    keeper = Stepper()
    results.expect_value("store.store", (yield call(root, "store", keeper)), None)
    results.record(
        "store.exported", exported(broker, keeper), "entry in our localObjects"
    )
    results.expect_value("store.callStored", (yield call(root, "callStored", "step", 5)), 10)
    results.expect_value("store.dropStored", (yield call(root, "dropStored")), True)
    started = time.monotonic()
    released = yield wait_until(lambda: not exported(broker, keeper), timeout=5.0)
    waited = time.monotonic() - started
    results.record(
        "store.decref_received",
        released,
        f"released after {waited:.3f}s" if released else "still exported after 5s",
    )


@defer.inlineCallbacks
def step_inflight(root, results, options):
    """A slow call does not block a later fast one; answers come back out
    of order and each reaches its own caller."""
    order = []
    slow = call(root, "slowAdd", 1, 2, 0.5).addCallback(
        lambda outcome: order.append("slowAdd") or outcome
    )
    fast = call(root, "add", 3, 4).addCallback(
        lambda outcome: order.append("add") or outcome
    )
    fast_outcome = yield fast
    slow_outcome = yield slow
    results.expect_value("inflight.add", fast_outcome, 7)
    results.expect_value("inflight.slowAdd", slow_outcome, 3)
    results.record("inflight.order", order == ["add", "slowAdd"], f"order={order}")


@defer.inlineCallbacks
def step_copy(root, results, options):
    """Copyables both ways: a Point from the server arrives as a RemotePoint;
    a Point we send arrives as the server's registered copy."""
    ok, point = yield call(root, "getPoint", 3, 4)
    if not ok:
        results.record("copy.getPoint", False, f"failed: {describe_failure(point)}")
    else:
        results.record(
            "copy.getPoint",
            isinstance(point, interop_types.RemotePoint)
            and getattr(point, "__dict__", None) == {"x": 3, "y": 4},
            f"{type(point).__name__} state={short(getattr(point, '__dict__', point))}",
        )
    total = yield call(root, "sumPoint", interop_types.Point(10, 20))
    results.expect_value("copy.sumPoint", total, 30)


@defer.inlineCallbacks
def step_cache(root, results, options):
    """A Cacheable from the server: copied once, updated through observe_,
    sent back as lcache, and released (decache/uncache) when dropped."""
    ok, counter = yield call(root, "getCounter")
    if not ok:
        results.record("cache.getCounter", False, f"failed: {describe_failure(counter)}")
        return
    results.record(
        "cache.getCounter",
        isinstance(counter, interop_types.RemoteCounter) and counter.value == 0,
        f"{type(counter).__name__} value={getattr(counter, 'value', None)}",
    )
    results.expect_value("cache.increment", (yield call(root, "increment")), 1)
    results.record(
        "cache.update", counter.value == 1 and counter.updates == [1],
        f"value={counter.value} updates={counter.updates}",
    )
    results.expect_value("cache.lcache", (yield call(root, "isCounter", counter)), True)
    results.expect_value("cache.observing", (yield call(root, "observerCount")), 1)
    del counter
    gc.collect()  # Twisted's RemoteCache sends decache from __del__, before our next call
    results.expect_value("cache.released", (yield call(root, "observerCount")), 0)


class Source(pb.Referenceable):
    """Pages samples.big_blob() to a collector (the upload direction)."""

    def remote_pages(self, collector):
        util.StringPager(collector, samples.big_blob())


@defer.inlineCallbacks
def step_views(root, results, options):
    """A Viewable reached through two avatars: each view sees its avatar."""
    seen = {}
    for name in ("alice", "bob"):
        ok, avatar = yield call(root, "user", name)
        if not ok:
            results.record(f"views.{name}", False, f"failed: {describe_failure(avatar)}")
            continue
        ok, board = yield call(avatar, "board")
        if not ok:
            results.record(f"views.{name}", False, f"failed: {describe_failure(board)}")
            continue
        yield call(board, "post", f"hi from {name}")
        who = yield call(board, "whoami")
        mine = yield call(board, "mine")
        seen[name] = (who, mine)
        results.record(
            f"views.{name}",
            who == (True, name) and mine == (True, [f"hi from {name}"]),
            f"whoami={short(who)} mine={short(mine)}",
        )


@defer.inlineCallbacks
def step_paging(root, results, options):
    """50 MiB each way with twisted.spread.util (not a default step)."""
    expected = samples.sha256(samples.big_blob())
    try:
        pages = yield util.getAllPages(root, "download", samples.BIG_SIZE)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        results.record("paging.download", False, f"failed: {exc!r}")
    else:
        got = samples.sha256(b"".join(pages))
        results.record("paging.download", got == expected, f"{len(pages)} pages, sha {got}")
    results.expect_value("paging.upload", (yield call(root, "pull", Source())), expected)


@defer.inlineCallbacks
def step_large(root, results, options):
    """Messages longer than one socket read (64 KiB and more) in both
    directions, including an answer from us to the server's own call.
    Not a default step: run it last (``--only ...,large``), since a peer
    that mishandles it may drop the connection."""
    text = "häßlich ✓ " * 20000  # 260,000 bytes of UTF-8
    results.expect_value("large.echo_str", (yield call(root, "echo", text)), text)
    blob = bytes(range(256)) * 800  # 204,800 bytes
    results.expect_value("large.echo_bytes", (yield call(root, "echo", blob)), blob)
    results.expect_value(
        "large.callback_answer",
        (yield call(root, "callMeBackKw", Stepper(), "describe", blob)),
        [[blob], {}],
    )
    results.expect_value("large.after", (yield call(root, "add", 1, 2)), 3)


STEPS = {
    "refs": step_refs,
    "echo": step_echo,
    "types": step_types,
    "errors": step_errors,
    "callbacks": step_callbacks,
    "store": step_store,
    "inflight": step_inflight,
    "copy": step_copy,
    "cache": step_cache,
    "views": step_views,
    "paging": step_paging,
    "large": step_large,
}
DEFAULT_STEPS = ["refs", "echo", "types", "errors", "callbacks", "store", "inflight", "copy",
                 "cache", "views"]


# -- driver -------------------------------------------------------------------


class Run:
    """Runs the selected steps once and prints the JSON report exactly once."""

    def __init__(self, options):
        self.options = options
        self.results = Results()
        self.steps_run = []
        self.current = None
        self.started = time.monotonic()
        self.exit_code = 0
        self.reported = False

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
        }
        sys.stdout.write(json.dumps(document) + "\n")
        sys.stdout.flush()

    def finish(self, exit_code, **report_args):
        if self.reported:  # e.g. the scenario ending after the timeout fired
            return
        self.report(**report_args)
        self.exit_code = exit_code
        if reactor.running:
            reactor.stop()

    def on_timeout(self):
        if self.current is not None:
            self.results.record(
                f"{self.current}.timeout",
                False,
                f"step still running after {self.options.timeout}s",
            )
        self.finish(1, timed_out=True)

    @defer.inlineCallbacks
    def scenario(self):
        factory = pb.PBClientFactory()
        reactor.connectTCP(self.options.host, self.options.port, factory)
        ok, root = yield settle(factory.getRootObject)
        if not ok:
            self.finish(1, error=f"connection failed: {describe_failure(root)}")
            return
        for name in self.options.only:
            self.current = name
            self.steps_run.append(name)
            try:
                yield STEPS[name](root, self.results, self.options)
            except Exception as e:  # a bug in a step must not hide other steps
                self.results.record(f"{name}.crashed", False, f"{type(e).__name__}: {e}")
        self.current = None
        factory.disconnect()
        self.finish(0)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_STEPS),
        help=f"comma-separated steps to run, in order (default: {','.join(DEFAULT_STEPS)};"
        f" all: {','.join(STEPS)})",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="safety timeout in seconds"
    )
    parser.add_argument(
        "--expect-tracebacks",
        action="store_true",
        help="also check that failures carry the remote traceback text",
    )
    options = parser.parse_args(argv)
    options.only = [s for s in options.only.split(",") if s]
    unknown = [s for s in options.only if s not in STEPS]
    if unknown:
        parser.error(f"unknown steps {unknown}; known: {list(STEPS)}")
    return options


def main(argv=None, parse=None, run_class=None):
    """Run the scenario; ``parse``/``run_class`` let another peer script
    (twisted_transport_client.py) reuse this driver with its own options."""
    options = (parse or parse_args)(argv)
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    run = (run_class or Run)(options)
    timeout_call = reactor.callLater(options.timeout, run.on_timeout)

    def crashed(failure):
        run.finish(1, error=f"client crashed: {describe_failure(failure)}")

    reactor.callWhenRunning(lambda: run.scenario().addErrback(crashed))
    reactor.run()
    if timeout_call.active():
        timeout_call.cancel()
    if not run.reported:  # reactor stopped by a signal
        run.report(error="interrupted")
        return 1
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
