"""The pool benchmarks run (a smoke run each: the harness works, the rows are there).

Their figures are not checked: speed targets live in the benchmarks' own
reports, never in tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_script(name, *args, timeout=120):
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *args],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pool_handoff_compares_with_its_anchors():
    out = run_script("pool_handoff.py", "--calls", "200", "--rounds", "1")
    for row in ("| syncpb ThreadPool.run |", "| syncpb ThreadPool.submit().result() |",
                "| concurrent.futures submit().result() (anchor) |",
                "| gevent ThreadPool.apply (anchor) |"):
        assert row in out


def test_responsiveness_quick_run_reports_every_row():
    out = run_script("responsiveness.py", "--quick")
    for kind in ("idle", "sleep_pooled", "sleep_inline"):
        assert f"| {kind} |" in out
    assert "| sqlite3 | 1 |" in out and "| sqlite3 | 8 |" in out
    # the PostgreSQL rows are measured where PostgreSQL is installed (always in
    # CI), else the report says why not
    if os.environ.get("CI") == "true":
        assert "| pg_pooled |" in out and "| postgresql | 8 |" in out
    else:
        assert ("| pg_pooled |" in out) or ("skipped" in out)
