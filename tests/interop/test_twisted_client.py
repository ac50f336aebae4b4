"""An unchanged Twisted PB client against a syncpb server.

The syncpb server (started in this process, in its own gevent hub thread)
publishes ``syncpb_peer.RootProvider``: per connection a root with exactly
the methods of ``tests/peers/twisted_server.py``. The real Twisted client
``tests/peers/twisted_client.py`` runs against it in a subprocess and
reports one JSON result per check; the tests below assert on those results.

To keep the module fast the client runs three times in all:

* ``main``: the default steps (parametrized below, one test per check);
* ``second``: at the same time as ``main``, a second client on its own
  connection running the default steps with ``--expect-tracebacks`` (the
  default server must *not* send tracebacks) and then the ``large`` step;
* ``tracebacks``: ``--only errors --expect-tracebacks`` against a server
  started with ``unsafe_tracebacks=True``.
"""

import threading

import pytest

import syncpb
from syncpb_peer import SAMPLE_NAMES, RootProvider

CLIENT_TIMEOUT = 45.0  # the client's own safety timeout is 30 s

DEFAULT_STEPS = ["refs", "echo", "types", "errors", "callbacks", "store", "inflight", "copy",
                 "cache", "views"]

# Every check the client reports for the default steps, in its order.
EXPECTED_RESULTS = (
    [
        f"refs.{n}"
        for n in ("refCount_initial", "getRef", "hello", "isSame", "refCount_held",
                  "proxy_released", "refCount_dropped")
    ]
    + [f"echo.{n}" for n in SAMPLE_NAMES]
    + ["echo.echoKw", "echo.echoArgs", "echo.add"]
    + ["types.call"]
    + [f"types.{n}" for n in SAMPLE_NAMES]
    + ["types.no_extra_keys", "types.cycle()", "types.shared()"]
    + [f"errors.{n}" for n in ("failValue", "failPbError", "failDeferred", "failCopyable",
                               "noSuchMethod")]
    + ["callbacks.callMeBack", "callbacks.callMeBackKw"]
    + [f"store.{n}" for n in ("store", "exported", "callStored", "dropStored",
                              "decref_received")]
    + ["inflight.add", "inflight.slowAdd", "inflight.order"]
    + ["copy.getPoint", "copy.sumPoint"]
    + [f"cache.{n}" for n in ("getCounter", "increment", "update", "lcache", "observing",
                              "released")]
    + ["views.alice", "views.bob"]
)
LARGE_RESULTS = ["large.echo_str", "large.echo_bytes", "large.callback_answer", "large.after"]


def failures(report, names=None):
    return {
        name: r["detail"]
        for name, r in report["results"].items()
        if not r["ok"] and (names is None or name in names)
    }


class RunningServer:
    """A started syncpb server, the roots it handed out and cached reports."""

    def __init__(self, unsafe_tracebacks=False):
        self.provider = RootProvider()
        self.server = syncpb.Server(self.provider, unsafe_tracebacks=unsafe_tracebacks)
        self.address = self.server.listen("tcp://127.0.0.1:0")
        host, _, port = self.address[len("tcp://"):].rpartition(":")
        self.host, self.port = host, int(port)
        self.reports = {}
        self.server.start()

    def stop(self):
        self.server.stop(timeout=10)


@pytest.fixture(scope="module")
def syncpb_server():
    running = RunningServer()
    try:
        yield running
    finally:
        running.stop()


def run_clients_concurrently(run, runs):
    """Run several Twisted clients at once; return their reports in order.

    ``runs`` is a list of extra-argument lists. A pytest.fail() raised by
    the fixture's runner in a thread is re-raised here.
    """
    outcomes = [None] * len(runs)

    def worker(index, args):
        try:
            outcomes[index] = ("ok", run(*args, timeout=CLIENT_TIMEOUT))
        except BaseException as exc:  # noqa: B902 - pytest.fail() is a BaseException
            outcomes[index] = ("error", exc)

    threads = [
        threading.Thread(target=worker, args=(i, args), daemon=True)
        for i, args in enumerate(runs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT + 15)
        assert not thread.is_alive(), "a Twisted client runner did not return"
    reports = []
    for kind, value in outcomes:
        if kind == "error":
            raise value
        reports.append(value)
    return reports


@pytest.fixture
def reports(syncpb_server, run_twisted_client):
    """The ``main`` and ``second`` client reports (both clients run once per
    module, concurrently, each on its own connection)."""
    cache = syncpb_server.reports
    if "main" not in cache:
        try:
            main, second = run_clients_concurrently(
                run_twisted_client,
                [
                    [syncpb_server.host, syncpb_server.port],
                    [syncpb_server.host, syncpb_server.port, "--expect-tracebacks",
                     "--only", ",".join(DEFAULT_STEPS + ["large"])],
                ],
            )
        except BaseException as exc:  # noqa: B902 - remember it: never rerun
            cache["main"] = cache["second"] = exc
            raise
        cache["main"], cache["second"] = main, second
    for report in (cache["main"], cache["second"]):
        if isinstance(report, BaseException):
            raise report
    return cache["main"], cache["second"]


@pytest.fixture
def main_report(reports):
    return reports[0]


@pytest.fixture
def second_report(reports):
    return reports[1]


# -- the main run ---------------------------------------------------------------


def test_main_run_completed(main_report):
    assert main_report["steps"] == DEFAULT_STEPS
    assert main_report["timed_out"] is False
    assert main_report["error"] is None
    assert failures(main_report) == {}


def test_main_run_reports_every_check(main_report):
    # Catches missing checks and extra ones such as "<step>.crashed".
    assert list(main_report["results"]) == EXPECTED_RESULTS


@pytest.mark.parametrize("name", EXPECTED_RESULTS)
def test_result(main_report, name):
    result = main_report["results"].get(name)
    assert result is not None, f"the Twisted client reported no {name!r}"
    assert result["ok"], result["detail"]


# -- the second, concurrent client ------------------------------------------------


def test_each_connection_has_its_own_root(syncpb_server, reports):
    # Both clients ran at the same time, each on its own connection with a
    # root of its own, whose refCount saw only that connection's exports
    # (refs.* pass in both reports).
    roots = syncpb_server.provider.roots
    assert len(roots) == 2
    assert roots[0] is not roots[1] and roots[0].broker is not roots[1].broker


def test_second_client_all_ok_but_tracebacks(second_report):
    assert second_report["steps"] == DEFAULT_STEPS + ["large"]
    assert second_report["timed_out"] is False and second_report["error"] is None
    assert set(second_report["results"]) == (
        set(EXPECTED_RESULTS) | {"errors.unsafeTraceback"} | set(LARGE_RESULTS)
    )
    failed = failures(second_report, set(EXPECTED_RESULTS) | {"errors.unsafeTraceback"})
    # Tracebacks are not sent by default: the client sees Twisted's
    # placeholder text instead.
    assert set(failed) == {"errors.unsafeTraceback"}
    assert "Traceback unavailable" in failed["errors.unsafeTraceback"]


@pytest.mark.parametrize("name", LARGE_RESULTS)
def test_large_messages(second_report, name):
    # Messages longer than one socket read, both ways; callback_answer is
    # the Twisted client's answer to the syncpb server's own call.
    result = second_report["results"].get(name)
    assert result is not None, f"the Twisted client reported no {name!r}"
    assert result["ok"], result["detail"]


# -- a server that sends tracebacks ------------------------------------------------


def test_unsafe_tracebacks(run_twisted_client):
    running = RunningServer(unsafe_tracebacks=True)
    try:
        report = run_twisted_client(
            running.host, running.port, "--only", "errors", "--expect-tracebacks",
            timeout=CLIENT_TIMEOUT,
        )
    finally:
        running.stop()
    assert report["steps"] == ["errors"]
    assert list(report["results"]) == [
        "errors.failValue", "errors.unsafeTraceback", "errors.failPbError",
        "errors.failDeferred", "errors.failCopyable", "errors.noSuchMethod",
    ]
    # The client checked that the text is a traceback ending in 'bad value'.
    assert report["results"]["errors.unsafeTraceback"]["ok"], (
        report["results"]["errors.unsafeTraceback"]["detail"]
    )
    assert "Traceback (most recent call last)" in (
        report["results"]["errors.unsafeTraceback"]["detail"]
    )
    assert failures(report) == {}


# -- paging ----------------------------------------------------------------------


def test_paging_50_mib_both_ways(syncpb_server, run_twisted_client):
    # twisted.spread.util.getAllPages from our server, and our getAllPages
    # pulling from the Twisted client's StringPager.
    report = run_twisted_client(syncpb_server.host, syncpb_server.port, "--only", "paging",
                                timeout=CLIENT_TIMEOUT)
    assert report["steps"] == ["paging"]
    assert list(report["results"]) == ["paging.download", "paging.upload"]
    assert failures(report) == {}
