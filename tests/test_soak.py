"""Small versions of the soak scripts in benchmarks/soak/ (the properties, never timings).

Each test imports a soak script and runs its ``run()`` with tiny
parameters: a real server in a child process, real sockets on 127.0.0.1,
TLS with the session's certificates. What must hold at full size must hold
here too: no call lost, misrouted or wrong; idle connections all counted and
answering; object tables back at their baseline; every call through a
cutting proxy either right or a syncpb error, none hung; many threads on one
connection with callbacks, no stall. The figures the scripts print at full
size are in the README's reliability section.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

SOAK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "benchmarks", "soak")
if SOAK not in sys.path:
    sys.path.insert(0, SOAK)

import connections as soak_connections  # noqa: E402
import cutting_proxy as soak_cutting_proxy  # noqa: E402
import idle as soak_idle  # noqa: E402
import objects as soak_objects  # noqa: E402
import threads as soak_threads  # noqa: E402


@pytest.mark.parametrize("mode", ["greenlets", "threads"])
def test_many_connections_lose_and_misroute_nothing(mode: str) -> None:
    figures = soak_connections.run(connections=20, calls=20, procs=1, mode=mode,
                                   deadline=40.0)
    assert figures["connect_failed"] == 0, figures
    assert (figures["ok"], figures["lost"], figures["misrouted"], figures["wrong"]) \
        == (400, 0, 0, 0), figures
    assert figures["errors"] == {}
    assert figures["sessions_after"] == 0  # the server dropped every closed connection


def test_idle_connections_are_all_kept_and_answer() -> None:
    figures = soak_idle.run(connections=200, sample=20, settle=0.0)
    assert figures["connections"] == 200 and figures["open_failed"] == 0
    assert figures["server_counts"] == 200
    assert (figures["sampled"], figures["answered"]) == (20, 20)
    assert figures["left_after_close"] == 0


def test_passing_and_dropping_objects_leaves_the_tables_at_baseline() -> None:
    figures = soak_objects.run(calls=2000)
    assert figures["wrong"] == 0 and figures["errors"] == {}
    assert figures["leftover"] == {}, figures["back"]
    assert figures["client_leftover"] == {}, (figures["client_baseline"],
                                              figures["client_final"])
    # the baseline itself is empty: only the server's shared counter lives on
    baseline = figures["baseline"]
    assert (baseline["exports"], baseline["imports"], baseline["caches"],
            baseline["cache_imports"], baseline["live_refs"], baseline["observers"]) \
        == (0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_calls_through_a_cutting_proxy_are_right_or_fail_cleanly(
        tls: bool, tls_material: Any) -> None:
    certdir = str(tls_material.directory) if tls else None
    figures = soak_cutting_proxy.run(calls=300, clients=3, tls=tls, certdir=certdir,
                                     deadline=30.0)
    assert figures["made"] == 300
    assert figures["ok"] + figures["failed"] == 300, figures
    assert (figures["wrong"], figures["hung"], figures["other"], figures["stuck_threads"]) \
        == (0, 0, 0, 0), figures
    assert figures["duplicates"] == 0  # no call ran twice on the server
    assert figures["open_after_clients"] == 0  # the clients closed every connection
    assert figures["server_sessions_left"] == 0  # and the server saw each one end
    assert figures["proxy"]["cuts"] > 0 and figures["failed"] > 0  # the cuts did hit calls
    assert figures["ok"] > 0


def test_threads_sharing_a_connection_with_callbacks_never_stall() -> None:
    figures = soak_threads.run(threads=16, calls_per_thread=300, callback_every=100,
                               stall=10.0)
    assert figures["stalls"] == [] and figures["errors"] == {}
    assert figures["wrong"] == 0
    assert figures["per_thread"] == [300] * 16
    assert figures["callbacks"] == figures["pings"] == 16 * 3
