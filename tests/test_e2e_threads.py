"""End to end: the thread model.

(a) a plain script (no monkey-patching, no hub in the caller's thread), run in
    a subprocess so nothing of pytest's process leaks in;
(b) many OS threads sharing one connection;
(c) gevent programs: a dedicated thread with its own hub in this process,
    and a monkey-patched program in a subprocess; a call blocks only its
    greenlet;
(d) re-entrancy: the server calls back into the client while the client's
    call is in flight (nested several levels), and while the client is idle.

Nothing sleeps. "Slow" server methods wait on a gate (a gevent Event created
in the server's hub thread) that a later call opens; ``until_waiting`` returns
once a call is blocked on that gate.
"""

import json
import subprocess
import sys
import textwrap
import threading

import gevent
import gevent.event
import pytest

import syncpb

from gates import Gates
from hubthread import run_in_gevent_thread

WAIT = 5.0



def run_json_script(tmp_path, name, source, *args):
    """Run ``source`` as a script in a subprocess; return its last line as JSON."""
    script = tmp_path / name
    script.write_text(source)
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=60, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])

class Service(Gates, syncpb.Root):
    """Server root. Every method runs in the server's hub thread."""

    def __init__(self):
        self.count = 0
        self.stored = None

    def remote_echo(self, value):
        return value

    def remote_inc(self):
        self.count += 1
        return self.count

    # -- calling back into the client (a blocking call from a server greenlet)

    def remote_run(self, cb, steps):
        return [cb.step(i) for i in range(steps)]

    def remote_bounce(self, cb, depth):
        if depth == 0:
            return [("server", 0)]
        return [("server", depth)] + cb.callRemote("bounce", depth - 1).result(timeout=WAIT)

    def remote_register(self, cb):
        self.stored = cb
        return True

    def remote_poke(self, message):
        return self.stored.callRemote("poked", message).result(timeout=WAIT)


@pytest.fixture
def address(server_factory):
    return server_factory(Service())[1]


def run_threads(count, target, timeout=30):
    """Run ``target(index)`` in ``count`` OS threads; return results, re-raise errors."""
    results, errors = [None] * count, []

    def body(index):
        try:
            results[index] = target(index)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "threads did not finish"
    if errors:
        raise errors[0]
    return results


# ====================================================================== (a) plain script

PLAIN_SCRIPT = textwrap.dedent("""
    import json, socket, sys, threading

    import syncpb

    class Calculator(syncpb.Root):
        def remote_calculate(self, a, b):
            return a + b

    server = syncpb.Server(Calculator())
    address = server.listen("tcp://127.0.0.1:0")
    server.start()
    conn = syncpb.connect(address, timeout=5)
    answers = [conn.root.calculate(i, i) for i in range(100)]
    deferred = conn.root.callRemote("calculate", 20, 1).addCallback(lambda r: r * 2)
    answers.append(deferred.result(timeout=5))
    conn.close()
    server.stop()

    import gevent.monkey
    from gevent._hub_local import get_hub_if_exists
    report = {
        "answers": answers,
        "socket_patched": bool(gevent.monkey.is_module_patched("socket")),
        "any_patched": [m for m in ("socket", "threading", "time", "select", "os", "ssl",
                                    "thread", "_thread", "queue", "signal", "subprocess")
                        if gevent.monkey.is_module_patched(m)],
        "saved": sorted(gevent.monkey.saved),
        "socket_class": socket.socket.__module__ + "." + socket.socket.__name__,
        "lock_module": type(threading.Lock()).__module__,
        "main_thread_hub": get_hub_if_exists() is not None,
        "wait_mode_in_main": syncpb.wait_mode(),
        "gevent_socket_in_sys_modules_socket": "gevent" in repr(sys.modules["socket"]),
        "connection_closed": conn.closed,
    }
    print(json.dumps(report))
""")


def test_a_plain_script_without_monkey_patching(tmp_path):
    report = run_json_script(tmp_path, "plain.py", PLAIN_SCRIPT)
    assert report["answers"] == [2 * i for i in range(100)] + [42]
    assert report["socket_patched"] is False
    assert report["any_patched"] == []
    assert report["saved"] == []
    assert report["socket_class"] == "socket.socket"
    assert report["lock_module"] == "_thread"
    assert report["main_thread_hub"] is False        # the client never made a hub here
    assert report["wait_mode_in_main"] == "thread"   # so calls here block the thread
    assert report["gevent_socket_in_sys_modules_socket"] is False
    assert report["connection_closed"] is True


# ====================================================================== (b) OS threads


def test_b_sixteen_threads_share_one_connection(address, connect):
    conn = connect(address)
    threads, calls = 16, 300
    barrier = threading.Barrier(threads, timeout=WAIT)

    def worker(tid):
        barrier.wait()
        mismatches = []
        for i in range(calls):
            if i % 3 == 0:
                answer = conn.root.callRemote("echo", (tid, i)).result(timeout=WAIT)
            else:
                answer = conn.root.echo((tid, i))
            if answer != (tid, i):
                mismatches.append((answer, (tid, i)))
        return mismatches

    results = run_threads(threads, worker)
    assert results == [[] for _ in range(threads)]
    assert conn.root.echo("after") == "after"
    assert conn.broker.waiting_count == 0


def test_b_threads_with_several_calls_in_flight_each(address, connect):
    conn = connect(address)
    threads = 8
    barrier = threading.Barrier(threads, timeout=WAIT)

    def worker(tid):
        barrier.wait()
        out = []
        for batch in range(20):
            ds = [conn.root.callRemote("echo", [tid, batch, k]) for k in range(10)]
            out.append(syncpb.gather(ds).result(timeout=WAIT))
        return out

    results = run_threads(threads, worker)
    for tid, out in enumerate(results):
        assert out == [[[tid, batch, k] for k in range(10)] for batch in range(20)]


def test_b_a_blocked_thread_does_not_block_the_others(address, connect):
    conn = connect(address)
    slow_result = []
    slow = threading.Thread(target=lambda: slow_result.append(conn.root.wait_gate("t")),
                            daemon=True)
    slow.start()
    assert conn.root.until_waiting("t") is True   # the slow call is now stuck in the server

    # other threads (and this one) keep calling on the same connection
    results = run_threads(4, lambda tid: [conn.root.echo((tid, i)) for i in range(50)])
    assert results == [[(tid, i) for i in range(50)] for tid in range(4)]
    assert slow.is_alive() and slow_result == []

    assert conn.root.open_gate("t") is True
    slow.join(WAIT)
    assert slow_result == ["t passed"]


def test_b_threads_each_with_own_connection(address):
    def worker(tid):
        with syncpb.connect(address, timeout=WAIT) as conn:
            return [conn.root.echo(f"{tid}-{i}") for i in range(100)]

    results = run_threads(8, worker)
    assert results == [[f"{tid}-{i}" for i in range(100)] for tid in range(8)]


# ====================================================================== (c) gevent


def test_c_a_call_blocks_only_its_greenlet(address):
    def scenario():
        shared = syncpb.connect(address, timeout=WAIT)
        own = syncpb.connect(address, timeout=WAIT)
        events = []

        def slow():
            answer = shared.root.wait_gate("g")
            events.append("slow done")
            return answer

        def fast(conn, tag):
            conn.root.until_waiting("g")      # returns once slow() is stuck in the server
            out = [conn.root.echo((tag, i)) for i in range(50)]
            out += conn.root.callRemote("echo", [tag]).result(timeout=WAIT)
            events.append(f"{tag} done")
            return out

        try:
            g_slow = gevent.spawn(slow)
            g_shared = gevent.spawn(fast, shared, "shared")
            g_own = gevent.spawn(fast, own, "own")
            gevent.joinall([g_shared, g_own], timeout=10, raise_error=True)
            assert g_shared.successful() and g_own.successful()
            slow_was_pending = not g_slow.ready()
            shared.root.open_gate("g")
            g_slow.join(timeout=WAIT)
            return {
                "slow_was_pending": slow_was_pending,
                "slow": g_slow.value,
                "shared": g_shared.value,
                "own": g_own.value,
                "events": events,
            }
        finally:
            shared.close()
            own.close()

    out = run_in_gevent_thread(scenario)
    assert out["slow_was_pending"] is True
    assert out["slow"] == "g passed"
    assert out["shared"] == [("shared", i) for i in range(50)] + ["shared"]
    assert out["own"] == [("own", i) for i in range(50)] + ["own"]
    assert sorted(out["events"][:2]) == ["own done", "shared done"]
    assert out["events"][2] == "slow done"


def test_c_many_greenlets_share_one_connection(address):
    def scenario():
        conn = syncpb.connect(address, timeout=WAIT)
        try:
            def worker(gid):
                return [conn.root.echo((gid, i)) for i in range(40)]

            greenlets = [gevent.spawn(worker, gid) for gid in range(20)]
            gevent.joinall(greenlets, timeout=20, raise_error=True)
            return [g.value for g in greenlets]
        finally:
            conn.close()

    results = run_in_gevent_thread(scenario)
    assert results == [[(gid, i) for i in range(40)] for gid in range(20)]


def test_c_timeout_and_callbacks_in_a_greenlet(address):
    def scenario():
        conn = syncpb.connect(address, timeout=WAIT)
        try:
            got = gevent.event.AsyncResult()
            conn.root.callRemote("echo", "cb").addCallback(got.set)
            callback_value = got.get(timeout=WAIT)   # nobody called result()

            d = conn.root.callRemote("wait_gate", "gt")
            try:
                d.result(timeout=0.2)
                timed_out = False
            except syncpb.CallTimeout:
                timed_out = True
            conn.root.open_gate("gt")
            return callback_value, timed_out, d.result(timeout=WAIT)
        finally:
            conn.close()

    assert run_in_gevent_thread(scenario) == ("cb", True, "gt passed")


MONKEY_SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import json, sys
    import gevent
    import syncpb

    address = sys.argv[1]
    shared = syncpb.connect(address, timeout=5)
    events = []

    def slow():
        answer = shared.root.wait_gate("patched")
        events.append("slow")
        return answer

    def fast(gid, conn=None):
        own = conn is None
        conn = conn or syncpb.connect(address, timeout=5)
        try:
            conn.root.until_waiting("patched")   # slow() is stuck in the server now
            out = [conn.root.echo([gid, i]) for i in range(30)]
            events.append(gid)
            return out
        finally:
            if own:
                conn.close()

    g_slow = gevent.spawn(slow)
    fasts = [gevent.spawn(fast, gid, shared if gid % 2 else None) for gid in range(6)]
    gevent.joinall(fasts, timeout=20, raise_error=True)
    pending = not g_slow.ready()
    shared.root.open_gate("patched")
    g_slow.join(timeout=5)
    report = {
        "patched": monkey.is_module_patched("socket"),
        "slow_was_pending": pending,
        "slow": g_slow.value,
        "fast": [g.value for g in fasts],
        "last_event": events[-1],
        "event_count": len(events),
    }
    shared.close()
    print(json.dumps(report))
""")


def test_c_monkey_patched_gevent_program(tmp_path, address):
    """A monkey-patched client program (in a subprocess) against this process's server."""
    report = run_json_script(tmp_path, "patched.py", MONKEY_SCRIPT, address)
    assert report == {
        "patched": True,
        "slow_was_pending": True,
        "slow": "patched passed",
        "fast": [[[gid, i] for i in range(30)] for gid in range(6)],
        "last_event": "slow",
        "event_count": 7,
    }


PATCHED_SERVER_SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import json, time
    import syncpb

    real_ident = monkey.get_original("_thread", "get_ident")

    class Where(syncpb.Root):
        def remote_thread(self):
            return real_ident()

    server = syncpb.Server(Where())
    address = server.listen("tcp://127.0.0.1:0")
    server.start()
    with syncpb.connect(address, timeout=5) as conn:
        server_thread = conn.root.thread()
    started = time.monotonic()
    server.stop(timeout=2)
    print(json.dumps({"main": real_ident(), "server": server_thread,
                      "stop_seconds": time.monotonic() - started}))
""")


def test_c_server_start_in_a_monkey_patched_program(tmp_path):
    # Regression: Server.start() used the pre-patch threading.Thread class, whose
    # methods use the patched module globals, so it spawned a greenlet on the
    # caller's hub and stop() waited its whole timeout for join().
    report = run_json_script(tmp_path, "patched_server.py", PATCHED_SERVER_SCRIPT)
    # documented: start() serves "in a background thread (own gevent hub)"
    assert report["server"] != report["main"]
    assert report["stop_seconds"] < 1.5


# ====================================================================== (d) re-entrancy


class Stepper(syncpb.Referenceable):
    """Client-side object the server calls; it calls the server back."""

    def __init__(self):
        self.conn = None
        self.threads = set()

    def remote_step(self, i):
        self.threads.add(threading.current_thread())
        return (i, self.conn.root.inc())          # blocking call back to the server

    def remote_bounce(self, depth):
        self.threads.add(threading.current_thread())
        if depth == 0:
            return [("client", 0)]
        return [("client", depth)] + self.conn.root.bounce(self, depth - 1)


def test_d_server_calls_client_which_calls_server(address, connect):
    conn = connect(address)
    stepper = Stepper()
    stepper.conn = conn
    # the outer blocked caller is this plain OS thread
    assert conn.root.run(stepper, 5) == [(i, i + 1) for i in range(5)]
    assert threading.main_thread() not in stepper.threads
    assert threading.current_thread() not in stepper.threads
    assert conn.root.inc() == 6


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_d_nested_reentrancy(address, connect, depth):
    conn = connect(address)
    stepper = Stepper()
    stepper.conn = conn
    expected = [("server" if (depth - k) % 2 == 0 else "client", k)
                for k in range(depth, -1, -1)]
    assert conn.root.bounce(stepper, depth) == expected
    if depth == 3:
        assert expected == [("server", 3), ("client", 2), ("server", 1), ("client", 0)]
    assert conn.root.echo("alive") == "alive"


def test_d_reentrancy_from_several_threads_at_once(address, connect):
    conn = connect(address)
    threads, steps = 4, 10
    barrier = threading.Barrier(threads, timeout=WAIT)

    def worker(tid):
        stepper = Stepper()
        stepper.conn = conn
        barrier.wait()
        return conn.root.run(stepper, steps)

    results = run_threads(threads, worker)
    for out in results:
        assert [i for i, _ in out] == list(range(steps))
    counts = sorted(count for out in results for _, count in out)
    assert counts == list(range(1, threads * steps + 1))


def test_d_outer_call_callback_style_with_reentrancy(address, connect):
    conn = connect(address)
    stepper = Stepper()
    stepper.conn = conn
    done = threading.Event()
    got = []
    conn.root.callRemote("run", stepper, 3).addCallback(lambda r: (got.append(r), done.set()))
    assert done.wait(WAIT)        # nobody waits: the background reader drives it all
    assert got == [[(0, 1), (1, 2), (2, 3)]]


class Listener(syncpb.Referenceable):
    def __init__(self):
        self.received = []
        self.thread = None
        self.event = threading.Event()

    def remote_poked(self, message):
        self.received.append(message)
        self.thread = threading.current_thread()
        self.event.set()
        return f"ack {message}"


def test_d_server_calls_an_idle_client(address, connect):
    first, second = connect(address), connect(address)
    listener = Listener()
    assert first.root.register(listener) is True
    # from here on the first client's threads make no call at all
    assert second.root.poke("hello") == "ack hello"
    assert listener.event.wait(WAIT)
    assert listener.received == ["hello"]
    assert listener.thread is not threading.current_thread()
    assert second.root.poke("again") == "ack again"
    assert listener.received == ["hello", "again"]


def test_d_callback_runs_without_anyone_calling_result(address, connect):
    conn = connect(address)
    done = threading.Event()
    seen = []

    def callback(value):
        seen.append((value, threading.current_thread()))
        done.set()

    conn.root.callRemote("echo", "by callback").addCallback(callback)
    assert done.wait(WAIT)
    assert seen[0][0] == "by callback"

    failed = threading.Event()
    failures = []
    conn.root.callRemote("no_such").addErrback(lambda f: (failures.append(f), failed.set()))
    assert failed.wait(WAIT)
    assert failures[0].check(syncpb.NoSuchMethod)
