"""benchmarks/run.py's chart (``--chart``, ``--chart-from``) and its progress lines.

The chart needs matplotlib, a ``bench`` extra, not a ``test`` one: those
tests skip without it. No figure is checked: only that the machinery works.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_py(*args, timeout=50, prelude=None):
    """``python benchmarks/run.py ARGS``; with ``prelude``, that code runs first
    in the same interpreter (e.g. to hide a module)."""
    if prelude is None:
        argv = [sys.executable, str(RUN), *args]
    else:
        code = (f"{prelude}\nimport runpy, sys\nsys.argv = {[str(RUN), *args]!r}\n"
                f"runpy.run_path({str(RUN)!r}, run_name='__main__')")
        argv = [sys.executable, "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def small_figures():
    """A ``--json`` file as run.py writes it, cut down: two workloads, three
    peers, two rounds, one failed cell."""
    cells = {
        "W1/syncpb": [{"value": 20000.0, "round": 1}, {"value": 22000.0, "round": 2}],
        "W1/twisted": [{"value": 7000.0, "round": 1}, {"value": 7400.0, "round": 2}],
        "W1/pyro5": [{"value": 18000.0, "round": 1}, {"error": "boom", "round": 2}],
        "W3/syncpb": [{"value": 900.5, "round": 1}, {"value": 950.0, "round": 2}],
        "W3/twisted": [{"value": 190.0, "round": 1}, {"value": 200.0, "round": 2}],
        "W3/pyro5": [{"value": 1200.0, "round": 1}, {"value": 1100.0, "round": 2}],
    }
    return {
        "command": "benchmarks/run.py --rounds 2",
        "date": "2026-12-06T12:00:00+00:00",
        "facts": {"python": "CPython 3.11.7 (/x/bin/python)", "nproc": 2,
                  "cpu_model": "AMD EPYC", "platform": "Linux-6.18.44-x86_64",
                  "versions": {"Twisted": "26.10.0", "Pyro5": "5.17"},
                  "repo_commit": "abc1234"},
        "args": {"rounds": 2, "quick": False},
        "peers": ["syncpb", "twisted", "pyro5"],
        "workloads": ["W1", "W3"],
        "labels": {"W1": "W1 seq add", "W3": "W3 seq echo 256 KiB"},
        "units": {"W1": "calls/s", "W3": "MB/s"},
        "notes": {"W1/pyro5": "a caveat"},
        "cells": cells,
        "median": {"W1": {"syncpb": 21000.0, "twisted": 7200.0, "pyro5": "ERR"},
                   "W3": {"syncpb": 925.25, "twisted": 195.0, "pyro5": 1150.0}},
    }


def test_chart_from_json_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    figures = tmp_path / "figures.json"
    figures.write_text(json.dumps(small_figures()))
    png = tmp_path / "chart.png"
    done = run_py("--chart-from", str(figures), "--chart", str(png))
    assert done.returncode == 0, done.stderr
    assert png.exists()
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert done.stdout == ""  # nothing was run, so there is no report


def test_chart_from_the_readme_figures(tmp_path):
    """The committed figures behind docs/benchmarks.png still draw."""
    pytest.importorskip("matplotlib")
    figures = RUN.parent / "results-readme.json"
    png = tmp_path / "readme.png"
    done = run_py("--chart-from", str(figures), "--chart", str(png))
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_chart_from_a_file_that_is_not_figures(tmp_path):
    pytest.importorskip("matplotlib")
    bad = tmp_path / "bad.json"
    bad.write_text('{"no": "median"}')
    done = run_py("--chart-from", str(bad), "--chart", str(tmp_path / "x.png"))
    assert done.returncode == 2
    assert "median" in done.stderr
    assert not (tmp_path / "x.png").exists()


def test_chart_without_matplotlib_says_how_to_get_it(tmp_path):
    """Before running anything: a long run must not end in a missing module."""
    figures = tmp_path / "figures.json"
    figures.write_text(json.dumps(small_figures()))
    for args in (["--chart-from", str(figures), "--chart", str(tmp_path / "a.png")],
                 ["--workloads", "W1", "--peers", "raw", "--chart", str(tmp_path / "b.png")]):
        done = run_py(*args, prelude="import sys; sys.modules['matplotlib'] = None")
        assert done.returncode == 2, done.stderr
        assert "pip install -e '.[bench]'" in done.stderr
        assert "cells:" not in done.stderr  # no benchmark started
    assert not list(tmp_path.glob("*.png"))


def test_chart_from_needs_chart():
    done = run_py("--chart-from", "figures.json")
    assert done.returncode == 2
    assert "--chart" in done.stderr


def test_progress_lines_of_a_tiny_run(tmp_path):
    """Two cells of the raw peer (no extra dependency), ~0.1 s each: a line on
    stderr as each starts and ends, the report on stdout, figures in JSON."""
    figures = tmp_path / "figures.json"
    done = run_py("--workloads", "W1", "--peers", "raw", "--rounds", "2",
                  "--seconds", "0.05", "--warmup", "0", "--no-pin",
                  "--json", str(figures))
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "[1/2] W1 raw round 1/2 ...\n" in err
    assert "[2/2] W1 raw round 2/2 ...\n" in err
    assert re.search(r"^\[1/2\] W1 raw round 1/2: [\d,]+ calls/s \([\d.]+ s; "
                     r"\d+:\d\d elapsed; ~\d+:\d\d left\)$", err, re.M), err
    assert re.search(r"^\[2/2\] W1 raw round 2/2: [\d,]+ calls/s \([\d.]+ s; "
                     r"\d+:\d\d elapsed\)$", err, re.M), err
    # each cell's start line comes before its end line
    assert err.index("[1/2] W1 raw round 1/2 ...") < err.index("[1/2] W1 raw round 1/2:")
    assert err.index("[1/2] W1 raw round 1/2:") < err.index("[2/2] W1 raw round 2/2 ...")
    # the report stays on stdout, and no progress line goes there
    assert done.stdout.startswith("# syncpb benchmark")
    assert "[1/2]" not in done.stdout
    doc = json.loads(figures.read_text())
    assert doc["peers"] == ["raw"] and doc["workloads"] == ["W1"]
    assert doc["median"]["W1"]["raw"] > 0
    assert doc["units"] == {"W1": "calls/s"} and doc["date"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_client_cpu_puts_server_and_client_on_cpus_of_their_own(tmp_path):
    server_cpu, client_cpu = sorted(os.sched_getaffinity(0))[:2]
    figures = tmp_path / "figures.json"
    done = run_py("--workloads", "W1", "--peers", "raw", "--rounds", "1",
                  "--seconds", "0.05", "--warmup", "0", "--cpu", str(server_cpu),
                  "--client-cpu", str(client_cpu), "--json", str(figures))
    assert done.returncode == 0, done.stderr
    assert (f"server pinned to CPU {server_cpu}, client to CPU {client_cpu}"
            in done.stdout)
    (cell,) = json.loads(figures.read_text())["cells"]["W1/raw"]
    assert (cell["pinned_cpu"], cell["client_cpu"]) == (server_cpu, client_cpu)
