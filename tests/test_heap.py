"""syncpb.tune_malloc: large messages stop costing page faults.

Each check runs in a fresh interpreter: the setting is process-wide and
must not leak into the test process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys

import pytest

import syncpb

GLIBC = platform.libc_ver()[0] == "glibc"
COMPILED = importlib.util.find_spec("syncpb._heap") is not None

# Make and drop two 256 KiB objects per round, in the order a 256 KiB echo
# does (the message read, the string decoded from it): freed together at
# the heap's top, they are given back to the kernel and faulted in again.
# The untuned ("plain") run sets glibc's default mmap threshold (128 KiB)
# explicitly: glibc raises it by itself once a large block is freed, and
# whether the blocks are then given back each round depends on what else
# lies at the heap's top after start-up (a fresh clone's build gave 0
# faults where another gave 48,000), so the baseline would not be one.
CHURN = """
import json, resource, sys
if sys.argv[1] == "tune-ctypes":
    sys.modules["syncpb._heap"] = None  # as where the extension was not built
import syncpb
tuned = syncpb.tune_malloc() if sys.argv[1] != "plain" else None
if sys.argv[1] == "plain":  # glibc's default mmap threshold, 128 KiB, set explicitly
    import ctypes
    ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # (M_MMAP_THRESHOLD)
def rounds(n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        message = b"x" * (256 * 1024)
        payload = message[1:]
        del message
        del payload
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
rounds(20)
print(json.dumps({"tuned": tuned, "faults": rounds(500),
                  "ctypes": "ctypes" in sys.modules}))
"""


def churn(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc's heap only")
@pytest.mark.parametrize("mode", ["tune", "tune-ctypes"])
def test_tuned_heap_keeps_large_messages_from_faulting(mode):
    plain, tuned = churn("plain"), churn(mode)
    pure = os.environ.get("SYNCPB_PURE") == "1"  # (the extension left out)
    assert tuned["tuned"] is True
    # Untuned, every round faults its pages in again (64 per 256 KiB).
    assert plain["faults"] > 500 * 32
    assert tuned["faults"] < 500
    assert tuned["faults"] * 20 < plain["faults"]
    # The compiled mallopt spares the process ctypes; the fallback uses it.
    assert tuned["ctypes"] is (mode == "tune-ctypes" or not COMPILED or pure)


def test_the_compiled_mallopt_is_built_under_ci():
    if os.environ.get("CI") != "true" and not COMPILED:
        pytest.skip("syncpb._heap not built here (CI requires it)")
    assert COMPILED


@pytest.mark.parametrize("thresholds, named", [
    ({"trim_threshold": -1}, "trim_threshold"),
    ({"trim_threshold": 2 ** 31}, "trim_threshold"),
    ({"mmap_threshold": 0}, "mmap_threshold"),
    ({"mmap_threshold": 64 * 1024 * 1024}, "glibc's limit"),
])
def test_tune_malloc_refuses_thresholds_glibc_would_not_take(thresholds, named):
    # Refused before anything is set, on any C library (nothing leaks here).
    with pytest.raises(ValueError, match=named):
        syncpb.tune_malloc(**thresholds)


@pytest.mark.skipif(GLIBC, reason="only where the C library is not glibc")
def test_tune_malloc_is_a_no_op_without_glibc():
    assert churn("tune")["tuned"] is False


# Free 24 MiB of 4 KiB blocks (malloc's, not Python's small-object arenas)
# as start-up does, then give it back; RSS is read from /proc.
RELEASE = """
import json, sys
if sys.argv[1] == "ctypes":
    sys.modules["syncpb._heap"] = None  # as where the extension was not built
import syncpb
from syncpb import heap
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
untuned = heap.release_free_memory()  # not tuned: nothing to do
syncpb.tune_malloc()
blocks = [bytes(4096) for _ in range(6144)]
keep = b"k" * 100  # (allocated after them, so the heap's top is not all free)
del blocks
before = rss()
released = heap.release_free_memory()
print(json.dumps({"untuned": untuned, "released": released, "before": before,
                  "after": rss(), "ctypes": "ctypes" in sys.modules}))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's heap only")
@pytest.mark.parametrize("mode", ["compiled", "ctypes"])
def test_release_free_memory_gives_back_what_a_tuned_heap_kept(mode):
    if mode == "compiled" and not COMPILED:
        pytest.skip("syncpb._heap not built here")
    done = subprocess.run([sys.executable, "-c", RELEASE, mode], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["untuned"] is False
    assert out["released"] is True
    assert out["before"] - out["after"] > 16 * 1024, out  # KiB: most of the 24 MiB
    assert out["ctypes"] is (mode == "ctypes")


def test_a_server_releases_free_memory_when_it_starts_serving(monkeypatch, server_factory):
    calls = []
    monkeypatch.setattr(syncpb.heap, "release_free_memory", lambda: calls.append(1) or False)
    server, address = server_factory(syncpb.Root())
    with syncpb.connect(address, timeout=10) as conn:
        assert conn.root is not None
    assert calls == [1]
