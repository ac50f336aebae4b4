"""The live mutation fuzzer (benchmarks/fuzz_server.py) on a small budget.

A real syncpb server in a child process, fuzzing clients on raw TCP
sockets and a well-behaved ``syncpb.connect`` client, exactly as the
script runs them; here 2,000 mutated frames instead of a million. The
figures that must be 0 are asserted; speed is not (it is the script's to
report). The script is imported, not copied.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import fuzz_server  # noqa: E402

FRAMES = 2_000


@pytest.mark.timeout(120)
def test_mutated_frames_never_crash_or_break_the_server(tmp_path: Path) -> None:
    options = fuzz_server.Options(frames=FRAMES, seconds=90, seed=7, workers=8,
                                  log=str(tmp_path / "server.log"), progress=3600)
    report = fuzz_server.run(options)
    text = fuzz_server.report_text(report)
    figures, must_be_0 = report["figures"], report["must_be_0"]
    assert figures["inputs tried"] == FRAMES, text
    assert figures["good-client calls"] >= options.min_good_calls, text
    assert figures["server exit status"] == 0, text  # it stopped when asked
    assert not report["log_problems"], text
    assert not any(must_be_0.values()), text


def test_the_log_scan_finds_tracebacks_errors_and_unhandled_errors(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "2026-01-01 00:00:00,000 INFO syncpb: PB connection ('127.0.0.1', 5) ended\n"
        "2026-01-01 00:00:00,001 WARNING syncpb: closing PB connection ('127.0.0.1', 5): "
        "method name b'Traceback unavailable; internal error; Unhandled error' is not UTF-8\n"
        "2026-01-01 00:00:00,002 WARNING syncpb: remote method f raised\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "ValueError: boom\n"
        "2026-01-01 00:00:00,003 ERROR syncpb: internal error on PB connection ('127.0.0.1', 6)\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "KeyError: <object at 0x7f00>\n"
        "2026-01-01 00:00:00,004 ERROR syncpb: Unhandled error in Deferred:\n")
    bad_lines, warnings, kinds = fuzz_server.scan_log(str(log))
    assert warnings == 2 and bad_lines == 4
    assert kinds == {
        "traceback under: WARNING syncpb: remote method f raised | ValueError: boom": 1,
        "ERROR syncpb: internal error on PB connection ? | KeyError: <object at ?>": 1,
        "ERROR syncpb: Unhandled error in Deferred:": 1}


def test_mutations_are_seeded_and_plans_start_with_the_handshake() -> None:
    corpus = fuzz_server.load_corpus()
    first, second = (fuzz_server.Mutator(corpus, "same seed") for _ in range(2))
    plans = [first.plan() for _ in range(50)]
    assert plans == [second.plan() for _ in range(50)]
    for opening, frames in plans:
        assert frames and (opening.startswith(fuzz_server.HANDSHAKE) or not opening)
    assert any(frame not in corpus.frames for _, frames in plans for frame in frames)
    assert corpus.values and all(fuzz_server.is_plain(v) for v in corpus.values)
