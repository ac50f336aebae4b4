"""The sessions' core (syncpb/sessioncore.py and its compiled twin,
syncpb/_csessioncore.pyx): the expected one is in use, and both carry calls
alike end to end.

The session suites run against both as well: under `make test` with the
compiled core, then with SYNCPB_PURE=1 (the Makefile's TWIN_TESTS).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import syncpb
from syncpb import sessioncore, speedups
from syncpb.green import GreenSession
from syncpb.session import GreenCore, Session, SessionCore, ThreadedCore, _Follower
from syncpb.threaded import ThreadedSession

ROOT = Path(__file__).resolve().parent.parent

# One client process: blocking calls from several threads, answers of every
# kind, a remote error, a call to a missing method, a closed connection;
# prints what each gave. Run once per core against the same server.
CLIENT = r'''
import sys, threading
import syncpb
from syncpb.session import SessionCore
conn = syncpb.connect(sys.argv[1], timeout=30)
root = conn.root
print("core", SessionCore.__module__)
for value in (0, 2**40, -3, 1.5, None, True, "\u00e9t\u00e9", b"raw", [1, [2]], {"k": (1, 2)}):
    print("echo", repr(root.echo(value)))
try:
    root.fail("no")
except Exception as exc:
    print("fail", type(exc).__name__, str(exc)[:60])
try:
    root.nosuch()
except Exception as exc:
    print("nosuch", type(exc).__name__, str(exc)[:60])
sums = {}
def worker(k):
    sums[k] = sum(root.add(i, k) for i in range(200))
threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join(60)
print("threads", sorted(sums.items()))
print("deferred", root.callRemote("add", 20, 22).result(timeout=10))
conn.close()
try:
    root.add(1, 2)
except Exception as exc:
    print("closed", type(exc).__name__)
'''


class Calc(syncpb.Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b

    def remote_echo(self, value: object) -> object:
        return value

    def remote_fail(self, text: str) -> None:
        raise ValueError(text)


def test_the_sessions_run_on_the_expected_core() -> None:
    compiled = speedups.load("_csessioncore")
    module = sessioncore if speedups.pure_forced() or compiled is None else compiled
    assert SessionCore is module.SessionCore
    assert ThreadedCore is module.ThreadedCore
    assert GreenCore is module.GreenCore
    assert GreenSession.__mro__[1] is GreenCore
    assert _Follower is module._Follower
    assert issubclass(ThreadedCore, SessionCore) and issubclass(GreenCore, SessionCore)
    assert ThreadedSession.__mro__[1] is ThreadedCore
    assert SessionCore in Session.__mro__ and SessionCore in GreenSession.__mro__


def test_a_follower_settles_once_and_wakes_its_sleeper() -> None:
    follower = _Follower()
    assert (follower.done, follower.ok, follower.value, follower.lock) == (False, False, None,
                                                                            None)
    follower.arm()
    woke = threading.Event()

    def sleeper() -> None:
        follower.lock.acquire()
        woke.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    follower.callback(42)
    thread.join(10)
    assert woke.is_set()
    assert (follower.done, follower.ok, follower.value) == (True, True, 42)
    follower.wake()  # already awake: nothing to release, no error


def test_both_cores_give_the_same_results_end_to_end(server_factory: Any) -> None:
    if speedups.load("_csessioncore") is None and not speedups.pure_forced():
        pytest.skip("the compiled sessions core is not built")
    _, address = server_factory(Calc())
    outputs = {}
    for pure in ("1", "0"):
        done = subprocess.run([sys.executable, "-c", CLIENT, address],
                              capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env={**os.environ, "SYNCPB_PURE": pure})
        assert done.returncode == 0, done.stderr
        outputs[pure] = done.stdout.splitlines()
    pure, compiled = outputs["1"], outputs["0"]
    assert pure[0] == "core syncpb.sessioncore"
    assert compiled[0] == "core syncpb._csessioncore"
    assert pure[1:] == compiled[1:]
    assert "threads [(0, 19900), (1, 20100), (2, 20300), (3, 20500)]" in pure
    assert "deferred 42" in pure
    assert any(line.startswith("fail RemoteError") for line in pure)
    assert any(line.startswith("nosuch NoSuchMethod") for line in pure)
    assert "closed DeadReferenceError" in pure


def test_a_socket_class_changed_after_use_has_its_own_methods_called(
        server_factory: Any) -> None:
    """The compiled core remembers which socket classes are the standard
    library's (it then reads and writes their descriptors); a class changed
    since is looked at again, so methods put on it are called."""
    class Counting(socket.socket):
        __slots__ = ()

    _, address = server_factory(Calc())
    conn = syncpb.connect(address, timeout=30)
    try:
        conn._session.sock.__class__ = Counting
        assert conn.root.add(1, 2) == 3  # (a standard socket still)
        seen: list = []

        def recv_into(self: Any, *args: Any) -> int:
            seen.append("recv_into")
            return socket.socket.recv_into(self, *args)

        def sendall(self: Any, *args: Any) -> None:
            seen.append("sendall")
            socket.socket.sendall(self, *args)

        Counting.recv_into = recv_into  # type: ignore[method-assign]
        Counting.sendall = sendall  # type: ignore[method-assign]
        assert conn.root.add(2, 3) == 5
        assert "recv_into" in seen and "sendall" in seen
    finally:
        conn.close()
