"""The gevent/thread boundary: a blocking call blocks only its caller.

The rule (README, "Threads, greenlets and blocking code"): inside a running
gevent hub a call blocks only the calling greenlet; anywhere else it blocks
the calling thread, whoever made the connection and whether or not a hub
existed then. One connection serves OS threads and greenlets of several
hubs at once.

Nothing here measures time. "The hub kept running" is shown by events: a
slow call waits at a gate that only another greenlet of the same hub opens
(so if the slow call froze the hub, it would never end, and its
``call_timeout`` turns that into a failure), and a ticker greenlet records
at each tick that the slow call is still pending.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import gevent
import gevent.event
import pytest

import syncpb
from syncpb.waiting import Wakeup

from gates import Gates
from hubthread import run_in_gevent_thread
from rawpeer import OFFER, VERSION_6, HostileServer, read_choice_and_version

WAIT = 10.0
TESTS = Path(__file__).resolve().parent


class Service(Gates, syncpb.Root):
    """Server root: gates, plus a count of the calls waiting at them."""

    def __init__(self) -> None:
        self.waiting = 0
        self.most_waiting = 0

    def remote_wait_gate(self, name):
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            return super().remote_wait_gate(name)
        finally:
            self.waiting -= 1

    def remote_most_waiting(self):
        return self.most_waiting

    def remote_add(self, a, b):
        return a + b

    def remote_echo(self, value):
        return value


@pytest.fixture
def address(server_factory):
    _, address = server_factory(Service())
    return address


# ================================================================ subprocess programs

PROGRAM = textwrap.dedent("""
    import sys
    if sys.argv[1] == "patched":
        from gevent import monkey
        monkey.patch_all()
    sys.path.insert(0, sys.argv[2])

    import json, threading
    from concurrent.futures import ThreadPoolExecutor

    import gevent
    import syncpb
    from test_gevent_boundary import Service

    server = syncpb.Server(Service())
    address = server.listen("tcp://127.0.0.1:0")
    server.start()   # its hub lives in the server's own thread, not in this one
    report = {"mode_before": syncpb.wait_mode()}

    # 1. No gevent call before connect(): the connection is made with no hub here.
    conn = syncpb.connect(address, timeout=5, call_timeout=10)
    slow = gevent.spawn(conn.root.wait_gate, "slow")
    ticks = []

    def ticker():
        conn.root.until_waiting("slow")          # the slow call is in the server now
        for _ in range(20):
            ticks.append(slow.ready())
            gevent.sleep(0)
        conn.root.open_gate("slow")              # only this greenlet ends the slow call

    gevent.joinall([slow, gevent.spawn(ticker)], timeout=20, raise_error=True)
    report["slow"] = slow.value
    report["ticks_while_slow_pending"] = ticks.count(False)
    report["mode_in_greenlet"] = gevent.spawn(syncpb.wait_mode).get()

    # 2. Ten slow calls from greenlets are in the server at the same time.
    gates = [f"g{i}" for i in range(10)]
    slows = [gevent.spawn(conn.root.wait_gate, name) for name in gates]

    def opener():
        for name in gates:
            conn.root.until_waiting(name)
        report["most_waiting"] = conn.root.most_waiting()
        for name in gates:
            conn.root.open_gate(name)

    gevent.joinall(slows + [gevent.spawn(opener)], timeout=20, raise_error=True)
    report["slows"] = [g.value for g in slows]
    conn.close()

    # 3. A hub exists before connect(); legacy code then shares the
    #    connection with threads and waits for them without yielding.
    gevent.sleep(0)
    report["mode_after_hub"] = syncpb.wait_mode()
    conn = syncpb.connect(address, timeout=5, call_timeout=3)
    with ThreadPoolExecutor(4) as pool:
        report["executor"] = list(pool.map(lambda i: conn.root.add(i, 1), range(8)))
    answers = {}

    def worker(n):
        answers[n] = [conn.root.add(n, i) for i in range(20)]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report["threads"] = [answers[n] for n in range(4)]
    conn.close()
    server.stop()
    print(json.dumps(report))
""")


@pytest.mark.parametrize("patching", ["unpatched", "patched"])
def test_a_gevent_program_blocks_only_the_calling_greenlet(tmp_path, patching):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    proc = subprocess.run([sys.executable, str(script), patching, str(TESTS)],
                          capture_output=True, text=True, timeout=50, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {
        # unpatched, the main thread has no hub yet; patch_all() makes one
        "mode_before": "thread" if patching == "unpatched" else "greenlet",
        "slow": "slow passed",
        "ticks_while_slow_pending": 20,   # the ticker ran while the call waited
        "mode_in_greenlet": "greenlet",
        "most_waiting": 10,               # all ten slow calls waited at once
        "slows": [f"g{i} passed" for i in range(10)],
        "mode_after_hub": "greenlet",
        "executor": [i + 1 for i in range(8)],
        "threads": [[n + i for i in range(20)] for n in range(4)],
    }


# ================================================================ in this process


def test_wait_mode_follows_the_caller():
    def scenario():
        hub = gevent.get_hub()
        in_callback = gevent.event.AsyncResult()
        hub.loop.run_callback(lambda: in_callback.set(syncpb.wait_mode()))
        return (syncpb.wait_mode(), gevent.spawn(syncpb.wait_mode).get(timeout=WAIT),
                in_callback.get(timeout=WAIT))

    assert syncpb.wait_mode() == "thread"
    # the main greenlet and a spawned one wait cooperatively; the hub itself cannot
    assert run_in_gevent_thread(scenario) == ("greenlet", "greenlet", "thread")


def test_wakeup_set_from_another_thread_wakes_only_the_greenlet():
    def scenario():
        wakeup = Wakeup()
        ticks = []
        setter = threading.Thread(target=lambda: (ticked.wait(WAIT), wakeup.set()))
        ticked = threading.Event()

        def ticker():
            ticks.append(1)
            ticked.set()

        setter.start()
        gevent.spawn(ticker)
        woke = wakeup.wait(WAIT)   # the ticker runs while we wait; then the thread sets us
        setter.join(WAIT)
        return woke, wakeup.green, len(ticks)

    assert run_in_gevent_thread(scenario) == (True, True, 1)


def test_one_connection_four_threads_and_twenty_greenlets_in_two_hubs(address):
    conn = syncpb.connect(address, timeout=WAIT, call_timeout=WAIT)
    results: dict = {}
    errors: list = []

    def greenlets_in_a_hub(hub_name):
        hub = gevent.get_hub()
        hub_thread = threading.get_ident()
        try:
            def worker(n):
                key = f"{hub_name}-{n}"
                answers = [conn.root.echo([key, i]) for i in range(30)]
                fired_in = []
                d = conn.root.callRemote("add", n, 1000)
                d.addCallback(lambda value: fired_in.append(threading.get_ident()) or value)
                answers.append(d.result(timeout=WAIT))
                results[key] = (answers, fired_in == [hub_thread])

            gevent.joinall([gevent.spawn(worker, n) for n in range(10)],
                           timeout=3 * WAIT, raise_error=True)
        except BaseException as exc:
            errors.append(exc)
        finally:
            hub.destroy(destroy_loop=True)

    def plain_thread(n):
        try:
            key = f"thread-{n}"
            answers = [conn.root.echo([key, i]) for i in range(30)]
            answers.append(conn.root.callRemote("add", n, 1000).result(timeout=WAIT))
            results[key] = (answers, True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=greenlets_in_a_hub, args=(f"hub{h}",)) for h in range(2)]
    threads += [threading.Thread(target=plain_thread, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(4 * WAIT)
    assert not any(thread.is_alive() for thread in threads)
    conn.close()
    assert errors == []
    expected = {}
    for hub_name in ("hub0", "hub1"):
        for n in range(10):
            key = f"{hub_name}-{n}"
            expected[key] = ([[key, i] for i in range(30)] + [n + 1000], True)
    for n in range(4):
        key = f"thread-{n}"
        expected[key] = ([[key, i] for i in range(30)] + [n + 1000], True)
    assert results == expected   # every answer, and every greenlet's callback ran in its hub


def test_a_frozen_hub_holds_up_only_its_own_greenlets(address):
    """A hub whose thread blocks in plain code stops its greenlets, nothing else."""
    conn = syncpb.connect(address, timeout=WAIT, call_timeout=2 * WAIT)
    freeze = threading.Lock()
    freeze.acquire()
    frozen = threading.Event()
    outcome = {}

    def hub_thread():
        hub = gevent.get_hub()
        try:
            g = gevent.spawn(conn.root.wait_gate, "frozen")
            conn.root.until_waiting("frozen")  # g's call is in the server
            frozen.set()
            freeze.acquire()                   # legacy code: the whole thread blocks
            outcome["g"] = g.get(timeout=WAIT)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            hub.destroy(destroy_loop=True)

    thread = threading.Thread(target=hub_thread)
    thread.start()
    assert frozen.wait(WAIT)
    # Meanwhile the connection serves this thread; the frozen greenlet's answer
    # arrives and waits for its hub.
    assert [conn.root.add(i, 1) for i in range(50)] == [i + 1 for i in range(50)]
    assert conn.root.open_gate("frozen") is True
    freeze.release()
    thread.join(2 * WAIT)
    conn.close()
    assert outcome == {"g": "frozen passed"}


def test_a_large_message_from_a_greenlet(address):
    """What the socket does not take at once is written by the connection's
    thread; the greenlet only waits."""
    # 4 MiB in one message, far more than a socket buffer (each string stays
    # under Banana's 640 KiB limit)
    payload = [bytes([n]) * (256 * 1024) for n in range(16)]

    def scenario():
        with syncpb.connect(address, timeout=WAIT, call_timeout=2 * WAIT) as conn:
            greenlets = [gevent.spawn(conn.root.echo, payload) for _ in range(3)]
            gevent.joinall(greenlets, timeout=3 * WAIT, raise_error=True)
            return [g.value == payload for g in greenlets]

    assert run_in_gevent_thread(scenario, timeout=4 * WAIT) == [True, True, True]


def test_connect_from_a_greenlet_waits_cooperatively():
    """The handshake arrives only after another greenlet of the same hub ran."""
    ticked = threading.Event()

    def script(stream):
        assert ticked.wait(WAIT)            # a greenlet ran while connect() waited
        stream.send(OFFER)
        read_choice_and_version(stream)
        stream.send(VERSION_6)
        return stream.read_until_closed(timeout=WAIT)

    with HostileServer(script) as server:
        def scenario():
            gevent.spawn(ticked.set)
            conn = syncpb.connect(server.address, timeout=WAIT)
            conn.close()
            return conn.closed

        assert run_in_gevent_thread(scenario) is True
        server.join()


def test_callbacks_of_a_greenlets_call_run_in_its_hub(address):
    def scenario():
        with syncpb.connect(address, timeout=WAIT) as conn:
            got = gevent.event.AsyncResult()   # a hub-bound object: set from the hub only
            conn.root.callRemote("add", 20, 22).addCallback(
                lambda value: got.set((value, threading.get_ident())))
            return got.get(timeout=WAIT), threading.get_ident()

    (value, fired_in), hub_thread = run_in_gevent_thread(scenario)
    assert (value, fired_in) == (42, hub_thread)


def test_a_unix_socket_connection_from_a_greenlet(server_factory):
    _, address = server_factory(Service(), unix=True)

    def scenario():
        with syncpb.connect(address, timeout=WAIT, call_timeout=WAIT) as conn:
            greenlets = [gevent.spawn(conn.root.add, i, 1) for i in range(10)]
            gevent.joinall(greenlets, timeout=WAIT, raise_error=True)
            return [g.value for g in greenlets]

    assert run_in_gevent_thread(scenario) == [i + 1 for i in range(10)]
