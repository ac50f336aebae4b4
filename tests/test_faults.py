"""Faults: a server SIGKILLed while callers wait in calls.

A server in a child process runs a method that blocks until the process
dies. Eight OS threads and eight greenlets (in one gevent hub, in its own
thread) each wait in that call, over one shared connection or each over its
own; once the server counts all sixteen, the test SIGKILLs its PID. Every
caller must get ``syncpb.ConnectionLost``: their call timeout is 30 s, so a
``CallTimeout`` (or no outcome within 30 s) is a failure. The round itself
is ``benchmarks/soak/kill_latency.py``'s :func:`kill_round`, which also
measures how soon the callers learn it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

SOAK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "benchmarks", "soak")
if SOAK not in sys.path:
    sys.path.insert(0, SOAK)

import kill_latency  # noqa: E402

THREADS = GREENLETS = 8


@pytest.mark.parametrize("shared", [True, False], ids=["one-connection", "own-connections"])
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_sigkill_mid_call_gives_every_caller_connection_lost(
        transport: str, shared: bool, tmp_path: Path, tls_material: Any) -> None:
    certdir = str(tls_material.directory) if transport == "tls" else None
    result = kill_latency.kill_round(transport, str(tmp_path), certdir, threads=THREADS,
                                     greenlets=GREENLETS, shared=shared, call_timeout=30.0)
    assert result["blocked"] == THREADS + GREENLETS  # all were waiting when it died
    assert result["pending"] == 0  # and each learned it (no hang)
    outcomes = result["outcomes"]
    assert sorted(o.kind for o in outcomes) == ["greenlet"] * GREENLETS + ["thread"] * THREADS
    assert [o.error for o in outcomes] == ["ConnectionLost"] * (THREADS + GREENLETS), outcomes
