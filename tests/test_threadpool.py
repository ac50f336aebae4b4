"""syncpb.adapters.ThreadPool: blocking work on real OS threads, results back
to whoever asked -- plain threads and greenlets of any number of hubs.

Nothing here measures time or sleeps to order events. A "blocking" function
waits on a ``threading.Event`` that the test sets; "the hub kept running" is
shown by another greenlet of the same hub being the one that releases it (if
the hub were frozen, the function would give up after ``WAIT`` seconds and
report that it was never released). Where a test must know that a plain
thread is *waiting* inside the pool (for room in the queue, or in ``stop()``),
``announce_waits`` watches that thread enter ``Wakeup.wait`` (the pool's one
way of waiting) through a profile hook: an observation, not a substitute.

The single exception is ``threads_after_stop``: the pool offers nothing to
wait on for "every thread has ended", so that one check polls (bounded).
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import textwrap
import threading
import time
import traceback

import gevent
import gevent.event
import pytest

import syncpb
from syncpb.adapters import threadpool
from syncpb.adapters.threadpool import (ThreadPool, blocking, default_pool, deferToThread,
                                        run_in_thread, set_default_pool)
from syncpb.failure import Failure
from syncpb.session import BLOCKING_ATTRIBUTE, is_blocking
from syncpb.waiting import Wakeup

from hubthread import run_in_gevent_thread

WAIT = 10.0


class Kit:
    """The pools and gates a test makes; all released and stopped at its end."""

    def __init__(self) -> None:
        self.pools = []
        self.gates = []

    def pool(self, size=2, **kwargs):
        pool = ThreadPool(size, name=f"test-pool-{len(self.pools)}", **kwargs)
        self.pools.append(pool)
        return pool

    def gate(self):
        """A threading.Event a pool function waits on; set at teardown at the latest."""
        event = threading.Event()
        self.gates.append(event)
        return event

    def close(self):
        for gate in self.gates:
            gate.set()
        for pool in self.pools:
            if not pool.closed:           # a test that stopped its pool checked the outcome
                pool.stop(timeout=WAIT)


@pytest.fixture
def kit():
    kit = Kit()
    yield kit
    kit.close()


def blocked_until(gate, entered=None, value=None):
    """A pool function: report that it runs, wait for ``gate``; return
    ``value`` (or whether the gate opened within WAIT seconds)."""
    def function():
        if entered is not None:
            entered.set()
        opened = gate.wait(WAIT)
        return opened if value is None else (value if opened else "never released")
    return function


def announce_waits(where, event):
    """Make the calling thread set ``event`` when it enters ``Wakeup.wait``
    from a function named ``where`` (``_put``: waiting for room; ``stop``).

    Returns a function that removes the hook. Only an observation: the wait
    itself is the pool's own.
    """
    wait_code = Wakeup.wait.__code__

    def profile(frame, what, arg):
        if what == "call" and frame.f_code is wait_code and frame.f_back.f_code.co_name == where:
            event.set()

    sys.setprofile(profile)
    return lambda: sys.setprofile(None)


def in_thread(target, *args, name="caller"):
    """Start ``target(*args)`` in a new thread; its outcome lands in the returned dict."""
    outcome = {}

    def body():
        try:
            outcome["result"] = target(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread, outcome


def threads_after_stop(pool):
    """How many of ``pool``'s threads are still alive, waiting up to ~5 s
    for them to end.

    stop() returns once the work is done and then hands each thread a
    sentinel; no event tells when the threads have actually ended, so this
    is the ONE place that polls (bounded, 10 ms steps). It only waits for an
    outcome; it never orders events between threads.
    """
    deadline = time.monotonic() + 5.0
    while pool.threads and time.monotonic() < deadline:
        time.sleep(0.01)
    return pool.threads


class Boom(Exception):
    pass


def explode(message):
    raise Boom(message)


# ================================================================ 1. results, errors, default pool


def test_run_returns_the_functions_value(kit):
    pool = kit.pool()
    assert pool.run(divmod, 17, 5) == (3, 2)
    assert pool.run(dict, a=1, b=2) == {"a": 1, "b": 2}
    worker, caller = pool.run(threading.get_ident), threading.get_ident()
    assert worker != caller                      # it ran in a pool thread


def test_run_reraises_the_functions_own_exception_with_its_traceback(kit):
    pool = kit.pool()
    raised = []

    def failing():
        error = Boom("bad input")
        raised.append(error)
        raise error

    with pytest.raises(Boom) as info:
        pool.run(failing)
    assert info.value is raised[0]               # the very object, not a copy
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "failing" in frames                   # the worker's frames are kept
    assert pool.run(len, "still works") == 11    # the thread survived it


def test_submit_callbacks_with_the_value(kit):
    pool = kit.pool()
    d = pool.submit(pow, 2, 10)
    assert isinstance(d, syncpb.Deferred)
    assert d.result(timeout=WAIT) == 1024
    got = []
    pool.submit(str.upper, "abc").addCallback(got.append).result(timeout=WAIT)
    assert got == ["ABC"]


def test_submit_errbacks_with_a_failure_of_the_exception(kit):
    pool = kit.pool()
    failures = []
    d = pool.submit(explode, "from submit")
    d.addErrback(lambda failure: failures.append(failure) or "handled")
    assert d.result(timeout=WAIT) == "handled"
    [failure] = failures
    assert isinstance(failure, Failure)
    assert isinstance(failure.value, Boom) and failure.value.args == ("from submit",)
    assert failure.check(Boom) is Boom
    assert "explode" in failure.getTraceback()
    # unhandled, the Deferred's result() raises the same exception object
    d = pool.submit(explode, "raised")
    with pytest.raises(Boom, match="raised"):
        d.result(timeout=WAIT)


def test_deferToThread_and_run_in_thread_use_the_default_pool(kit):
    mine = kit.pool(size=2)
    previous = set_default_pool(mine)
    try:
        assert default_pool() is mine
        # counted as running in *this* pool while they run
        assert run_in_thread(lambda: mine.running) == 1
        assert deferToThread(lambda: mine.running).result(timeout=WAIT) == 1
        assert run_in_thread(pow, 3, 3) == 27
        assert deferToThread(divmod, 7, 2).result(timeout=WAIT) == (3, 1)
        with pytest.raises(Boom):
            run_in_thread(explode, "default")
    finally:
        assert set_default_pool(previous) is mine


def test_default_pool_is_one_pool_until_stopped():
    previous = set_default_pool(None)   # None: the next use makes a fresh one
    made = []
    try:
        first = default_pool()
        made.append(first)
        assert default_pool() is first and not first.closed
        assert first.size == threadpool.default_size()
        assert first.stop(timeout=WAIT) is True
        second = default_pool()              # a stopped default pool is replaced
        made.append(second)
        assert second is not first and not second.closed
        assert default_pool() is second
        assert run_in_thread(lambda: second.running) == 1
        with pytest.raises(syncpb.PoolClosed):
            first.run(len, "")
    finally:
        set_default_pool(previous)
        for pool in made:
            pool.stop(timeout=WAIT)


def test_set_default_pool_swaps_and_returns_the_previous_one(kit):
    a, b = kit.pool(size=1), kit.pool(size=1)
    previous = set_default_pool(a)
    try:
        assert default_pool() is a
        assert set_default_pool(b) is a
        assert default_pool() is b
        assert not a.closed                  # the old one keeps running until stopped
        assert a.run(len, "abc") == 3
    finally:
        assert set_default_pool(previous) is b


def test_blocking_marks_a_method_and_leaves_it_callable():
    class Service:
        @blocking
        def remote_add(self, a, b):
            return a + b

        def remote_quick(self):
            return "quick"

    service = Service()
    assert getattr(Service.remote_add, BLOCKING_ATTRIBUTE) is True
    assert is_blocking(service.remote_add)             # what the server checks: bound methods
    assert not is_blocking(service.remote_quick)
    assert service.remote_add(2, 3) == 5               # called directly it just runs
    assert Service.remote_add.__name__ == "remote_add"


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="at least one thread"):
        ThreadPool(0)
    with pytest.raises(ValueError, match="max_queue"):
        ThreadPool(1, max_queue=-1)


# ================================================================ 2. many kinds of callers


def test_threads_and_greenlets_of_two_hubs_share_one_pool(kit):
    pool = kit.pool(size=4)
    start = threading.Barrier(6)               # 2 hub threads + 4 plain threads
    results = {}
    errors = []

    def work(key, i):
        return key, i, threading.get_ident()

    def calls(key):
        """What each caller does: ten run()s, one submit(); returns what it saw."""
        me = threading.get_ident()
        answers = [pool.run(work, key, i) for i in range(10)]
        fired_in = []
        d = pool.submit(work, key, "submitted")
        d.addCallback(lambda value: fired_in.append(threading.get_ident()) or value)
        submitted = d.result(timeout=WAIT)
        return {
            "answers": [(k, i) for k, i, _ in answers],
            "ran_elsewhere": all(worker != me for _, _, worker in answers),
            "submitted": submitted[:2],
            "workers": {worker for _, _, worker in answers} | {submitted[2]},
            # a greenlet's callbacks run in its hub's thread; a plain thread's
            # in the worker thread that ran the function
            "fired_in": fired_in,
            "submitted_by": me,
            "submit_worker": submitted[2],
        }

    def hub_thread(hub_name):
        hub = gevent.get_hub()
        try:
            start.wait(WAIT)
            greenlets = {f"{hub_name}-{n}": gevent.spawn(calls, f"{hub_name}-{n}")
                         for n in range(10)}
            gevent.joinall(list(greenlets.values()), timeout=3 * WAIT, raise_error=True)
            for key, greenlet in greenlets.items():
                results[key] = greenlet.get(block=False)
        except BaseException as exc:
            errors.append(exc)
        finally:
            hub.destroy(destroy_loop=True)

    def plain_thread(key):
        try:
            start.wait(WAIT)
            results[key] = calls(key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hub_thread, args=(f"hub{h}",)) for h in range(2)]
    threads += [threading.Thread(target=plain_thread, args=(f"thread-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(4 * WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(results) == 24
    workers = set()
    for key, seen in results.items():
        assert seen["answers"] == [(key, i) for i in range(10)], key
        assert seen["ran_elsewhere"], key
        assert seen["submitted"] == (key, "submitted"), key
        if key.startswith("hub"):
            assert seen["fired_in"] == [seen["submitted_by"]], key    # the hub's thread
        else:
            assert seen["fired_in"] == [seen["submit_worker"]], key   # the worker's thread
            assert seen["submit_worker"] != seen["submitted_by"], key
        workers |= seen["workers"]
    assert len(workers) <= 4                    # all of it on the pool's (at most 4) threads


def test_a_greenlets_submit_fires_in_its_hubs_thread(kit):
    pool = kit.pool()

    def scenario():
        got = gevent.event.AsyncResult()   # hub-bound: setting it from another thread would fail
        d = pool.submit(threading.get_ident)
        d.addCallback(lambda worker: got.set((worker, threading.get_ident())))
        return got.get(timeout=WAIT), threading.get_ident()

    (worker, fired_in), hub_thread = run_in_gevent_thread(scenario)
    assert fired_in == hub_thread
    assert worker != hub_thread


def test_a_plain_threads_submit_fires_in_the_worker_thread(kit):
    pool = kit.pool()
    fired_in = []
    d = pool.submit(threading.get_ident)
    d.addCallback(lambda worker: fired_in.append(threading.get_ident()) or worker)
    worker = d.result(timeout=WAIT)
    assert fired_in == [worker]
    assert worker != threading.get_ident()


# ================================================================ 3. a greenlet blocks only itself


def test_run_from_a_greenlet_blocks_only_that_greenlet(kit):
    pool = kit.pool(size=1)
    release = kit.gate()
    entered = threading.Event()

    def scenario():
        caller = gevent.spawn(pool.run, blocked_until(release, entered))
        seen = {}

        def opener():
            # runs only once the caller's greenlet has yielded inside run()
            seen["caller_pending"] = not caller.ready()
            seen["in_pool"] = pool.running + pool.queued
            release.set()

        gevent.joinall([caller, gevent.spawn(opener)], timeout=2 * WAIT, raise_error=True)
        return caller.get(block=False), seen

    # were the hub blocked, the opener could not run: the function would wait
    # WAIT seconds in vain and return False
    assert run_in_gevent_thread(scenario, timeout=3 * WAIT) == (
        True, {"caller_pending": True, "in_pool": 1})
    assert entered.is_set()


# ================================================================ 4. bounds


def test_never_more_than_size_functions_run_at_once(kit):
    size = 3
    pool = kit.pool(size=size, max_queue=100)
    release = kit.gate()
    all_in = threading.Event()
    lock = threading.Lock()
    counts = {"entered": 0, "active": 0, "most_active": 0}

    def task(i):
        with lock:
            counts["entered"] += 1
            counts["active"] += 1
            counts["most_active"] = max(counts["most_active"], counts["active"])
            if counts["entered"] == size:
                all_in.set()
        try:
            assert release.wait(WAIT)
            return i
        finally:
            with lock:
                counts["active"] -= 1

    deferreds = [pool.submit(task, i) for i in range(3 * size)]
    assert all_in.wait(WAIT)
    # every thread is held in a task: the rest can only be queued
    assert (pool.running, pool.queued, pool.threads) == (size, 2 * size, size)
    assert counts["entered"] == size
    release.set()
    assert [d.result(timeout=WAIT) for d in deferreds] == list(range(3 * size))
    assert counts == {"entered": 3 * size, "active": 0, "most_active": size}
    assert (pool.running, pool.queued) == (0, 0)
    assert pool.threads <= size


def test_a_full_pool_refuses_at_once(kit):
    pool = kit.pool(size=1, max_queue=1)        # queue_timeout=0: refuse, never wait
    release = kit.gate()
    entered = threading.Event()
    refused_calls = []
    running = pool.submit(blocked_until(release, entered, "A"))
    assert entered.wait(WAIT)
    queued = pool.submit(str, "B")
    assert (pool.running, pool.queued) == (1, 1)

    with pytest.raises(syncpb.PoolSaturated) as info:
        pool.submit(refused_calls.append, "submit")
    message = str(info.value)
    assert "size=1" in message and "max_queue=1" in message
    assert "1 running, 1 queued" in message
    with pytest.raises(syncpb.PoolSaturated):
        pool.run(refused_calls.append, "run")
    assert (pool.running, pool.queued) == (1, 1)  # refused work left no trace

    release.set()
    assert running.result(timeout=WAIT) == "A"
    assert queued.result(timeout=WAIT) == "B"
    assert refused_calls == []                   # neither refused function ever ran
    assert pool.run(str, "room again") == "room again"


def test_max_queue_zero_takes_only_what_threads_can_run(kit):
    pool = kit.pool(size=1, max_queue=0)
    release = kit.gate()
    entered = threading.Event()
    running = pool.submit(blocked_until(release, entered, "A"))
    assert entered.wait(WAIT)
    with pytest.raises(syncpb.PoolSaturated, match="max_queue=0"):
        pool.run(str, "B")
    release.set()
    assert running.result(timeout=WAIT) == "A"


def test_a_thread_waiting_for_room_gets_it_when_a_task_finishes(kit):
    # queue_timeout is far beyond the join below: only the wake-up sent when
    # a task finishes can let the waiter in within the test's wait
    pool = kit.pool(size=1, max_queue=1, queue_timeout=6 * WAIT)
    release = kit.gate()
    entered = threading.Event()
    running = pool.submit(blocked_until(release, entered, "A"))
    assert entered.wait(WAIT)
    queued = pool.submit(str, "B")
    waiting = threading.Event()

    def third_caller():
        unhook = announce_waits("_put", waiting)
        try:
            return pool.run(str, "C")
        finally:
            unhook()

    thread, outcome = in_thread(third_caller)
    assert waiting.wait(WAIT)                    # it is waiting for room, not refused
    assert (pool.running, pool.queued) == (1, 1)
    release.set()                                # A finishes: room for C
    thread.join(WAIT)
    assert not thread.is_alive()
    assert outcome == {"result": "C"}            # it got in, and did not raise
    assert running.result(timeout=WAIT) == "A"
    assert queued.result(timeout=WAIT) == "B"


def test_a_greenlet_waiting_for_room_blocks_only_itself(kit):
    pool = kit.pool(size=1, max_queue=1, queue_timeout=6 * WAIT)
    release = kit.gate()
    entered = threading.Event()
    running = pool.submit(blocked_until(release, entered, "A"))
    assert entered.wait(WAIT)
    queued = pool.submit(str, "B")

    def scenario():
        caller = gevent.spawn(pool.run, str, "C")
        seen = {}

        def opener():
            # the caller yielded while waiting for room: its task is not queued yet
            seen["caller_pending"] = not caller.ready()
            seen["in_pool"] = (pool.running, pool.queued)
            release.set()

        gevent.joinall([caller, gevent.spawn(opener)], timeout=2 * WAIT, raise_error=True)
        return caller.get(block=False), seen

    assert run_in_gevent_thread(scenario, timeout=3 * WAIT) == (
        "C", {"caller_pending": True, "in_pool": (1, 1)})
    assert running.result(timeout=WAIT) == "A"
    assert queued.result(timeout=WAIT) == "B"


# ================================================================ 5. stop()


def test_stop_lets_queued_and_running_work_finish(kit):
    pool = kit.pool(size=1)
    release_a, release_b = kit.gate(), kit.gate()
    entered_a, entered_b = threading.Event(), threading.Event()
    running = pool.submit(blocked_until(release_a, entered_a, "A"))
    assert entered_a.wait(WAIT)
    queued = pool.submit(blocked_until(release_b, entered_b, "B"))
    stopping = threading.Event()

    def stopper():
        unhook = announce_waits("stop", stopping)
        try:
            stopped = pool.stop(timeout=WAIT)
        finally:
            unhook()
        return stopped, running.called, queued.called   # what was done when stop() returned

    thread, outcome = in_thread(stopper, name="stopper")
    assert stopping.wait(WAIT)                    # stop() was called and waits for the work
    assert pool.closed
    with pytest.raises(syncpb.PoolClosed):
        pool.submit(str, "late")
    with pytest.raises(syncpb.PoolClosed, match="stopped"):
        pool.run(str, "late")
    assert not running.called and not queued.called
    release_a.set()
    assert entered_b.wait(WAIT)                   # the queued work still runs after stop()
    assert outcome == {}                          # ... and stop() waits for it
    release_b.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert outcome == {"result": (True, True, True)}
    assert (running.result(timeout=0), queued.result(timeout=0)) == ("A", "B")
    assert threads_after_stop(pool) == 0
    with pytest.raises(syncpb.PoolClosed):
        pool.run(str, "after")


def test_stop_waits_until_a_greenlets_result_reached_its_hub(kit):
    """A result counts as delivered once its caller has it: for a greenlet's
    submit(), when its hub has fired the Deferred, not when the worker is done."""
    pool = kit.pool(size=1)
    release, thaw = kit.gate(), kit.gate()
    entered, submitted = threading.Event(), threading.Event()
    fired_in = []

    def hub_program():
        hub = gevent.get_hub()
        try:
            d = pool.submit(blocked_until(release, entered, "F"))
            d.addCallback(lambda value: fired_in.append(threading.get_ident()) or value)
            submitted.set()
            assert thaw.wait(WAIT)     # plain blocking code: this hub cannot run meanwhile
            return d.result(timeout=WAIT), threading.get_ident()
        finally:
            hub.destroy(destroy_loop=True)

    program, program_outcome = in_thread(hub_program, name="hub-program")
    assert submitted.wait(WAIT) and entered.wait(WAIT)
    behind = pool.submit(str, "G")                # queued behind F on the only thread
    stopping = threading.Event()

    def stopper():
        unhook = announce_waits("stop", stopping)
        try:
            stopped = pool.stop(timeout=WAIT)
        finally:
            unhook()
        return stopped, list(fired_in)            # had the hub got F when stop() returned?

    thread, outcome = in_thread(stopper, name="stopper")
    assert stopping.wait(WAIT)
    release.set()
    assert behind.result(timeout=WAIT) == "G"     # the worker is done with F, and with G
    assert fired_in == []                         # F's result waits for its frozen hub
    assert outcome == {}                          # ... and so does stop()
    thaw.set()
    program.join(WAIT)
    thread.join(WAIT)
    assert not program.is_alive() and not thread.is_alive()
    value, hub_ident = program_outcome["result"]
    assert value == "F"
    assert outcome == {"result": (True, [hub_ident])}   # stop() returned after the hub had it


def test_stop_of_an_idle_pool_ends_its_threads(kit):
    pool = kit.pool(size=3)
    assert [pool.run(abs, -n) for n in range(5)] == list(range(5))
    assert pool.threads >= 1
    assert pool.stop(timeout=WAIT) is True
    assert pool.closed
    assert threads_after_stop(pool) == 0
    assert pool.stop(timeout=WAIT) is True       # a second stop is harmless
    assert "stopped" in repr(pool)


def test_stop_wakes_a_caller_waiting_for_room_with_pool_closed(kit):
    pool = kit.pool(size=1, max_queue=1, queue_timeout=6 * WAIT)
    release = kit.gate()
    entered = threading.Event()
    running = pool.submit(blocked_until(release, entered, "A"))
    assert entered.wait(WAIT)
    queued = pool.submit(str, "B")
    waiting = threading.Event()
    ran = []

    def third_caller():
        unhook = announce_waits("_put", waiting)
        try:
            return pool.run(ran.append, "C")
        finally:
            unhook()

    thread, outcome = in_thread(third_caller)
    assert waiting.wait(WAIT)
    assert pool.stop(timeout=0) is False          # A is still held
    thread.join(WAIT)                             # woken by stop(), long before its queue_timeout
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), syncpb.PoolClosed), outcome
    release.set()
    # work accepted before stop() still runs to the end
    assert running.result(timeout=WAIT) == "A"
    assert queued.result(timeout=WAIT) == "B"
    assert ran == []
    assert threads_after_stop(pool) == 0


def test_stop_with_a_short_timeout_returns_false_while_work_runs(kit):
    pool = kit.pool(size=2)
    release = kit.gate()
    entered = threading.Event()
    held = pool.submit(blocked_until(release, entered, "A"))
    assert entered.wait(WAIT)
    assert pool.stop(timeout=0.1) is False        # the function cannot end: its gate is shut
    assert pool.closed and not held.called
    with pytest.raises(syncpb.PoolClosed):
        pool.submit(str, "late")
    release.set()
    assert held.result(timeout=WAIT) == "A"       # the running work still completes
    assert threads_after_stop(pool) == 0          # and then its thread ends
    assert pool.stop(timeout=WAIT) is True        # nothing left to wait for


def test_shutdown_waits_like_stop(kit):
    pool = kit.pool(size=2)
    d = pool.submit(sum, [1, 2, 3])
    pool.shutdown()
    assert d.called and d.result(timeout=0) == 6
    assert pool.closed and threads_after_stop(pool) == 0


def test_a_deferred_its_caller_fired_first_does_not_wedge_stop(kit):
    pool = kit.pool(size=1)
    release = kit.gate()
    entered = threading.Event()
    d = pool.submit(blocked_until(release, entered, "late"))
    assert entered.wait(WAIT)
    d.callback("gave up waiting")                 # the caller settles it itself
    release_next, entered_next = kit.gate(), threading.Event()
    pool.submit(blocked_until(release_next, entered_next, "next"))   # behind it, same thread
    release.set()
    assert entered_next.wait(WAIT)                # so the worker has handed "late" over
    assert d.result(timeout=0) == "gave up waiting"
    try:
        # regression: the failed hand-over was counted twice, so stop() never
        # saw the pool drained (and shutdown() hung)
        release_next.set()
        assert pool.stop(timeout=WAIT) is True
    finally:
        release_next.set()
        pool.stop(timeout=0)


# ================================================================ 6. nested use


def test_nested_use_of_the_pool_runs_inline(kit):
    pool = kit.pool(size=1, max_queue=0)       # no second thread, no queue: inline or deadlock

    def outer():
        me = threading.get_ident()
        inner_thread = pool.run(threading.get_ident)
        got = []
        d = pool.submit(pow, 2, 5)
        d.addCallback(got.append)                # fired already: runs at once
        failures = []
        pool.submit(explode, "inner").addErrback(failures.append)
        with pytest.raises(Boom, match="nested"):
            pool.run(explode, "nested")
        return {
            "inner_thread_is_mine": inner_thread == me,
            "submitted": got,
            "errback": [type(f.value) for f in failures],
            "load": (pool.running, pool.queued),
        }

    assert pool.run(outer) == {
        "inner_thread_is_mine": True,
        "submitted": [32],
        "errback": [Boom],
        "load": (1, 0),                          # only the outer call ever entered the pool
    }
    assert pool.submit(outer).result(timeout=WAIT)["submitted"] == [32]


# ================================================================ 7. a monkey-patched program

PATCHED_PROGRAM = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import json
    import gevent
    import syncpb
    from syncpb.adapters import default_pool, deferToThread, run_in_thread
    from syncpb.waiting import Wakeup

    real_lock = monkey.get_original("_thread", "allocate_lock")
    real_ident = monkey.get_original("_thread", "get_ident")
    main_ident = real_ident()

    gate = real_lock()
    gate.acquire()
    entered = Wakeup()   # made here, in the hub's thread; set from the worker

    def blocking_work():
        entered.set()
        # a real lock: blocks this OS thread; were it a greenlet of the main
        # hub, the ticker could never run and release it
        got = gate.acquire(True, 20)
        return {"worker": real_ident(), "got_gate": got}

    call = gevent.spawn(run_in_thread, blocking_work)
    ticks = []

    def ticker():
        assert entered.wait(20)          # the function is running in the pool now
        for _ in range(20):
            ticks.append(call.ready())
            gevent.sleep(0)
        gate.release()                   # only this greenlet ends the blocking call

    gevent.joinall([call, gevent.spawn(ticker)], timeout=30, raise_error=True)
    result = call.get(block=False)

    fired = []
    d = deferToThread(real_ident)
    d.addCallback(lambda worker: fired.append((worker != main_ident, real_ident() == main_ident)))
    d.result(timeout=20)

    print(json.dumps({
        "mode": syncpb.wait_mode(),
        "ticks_while_pending": ticks.count(False),
        "got_gate": result["got_gate"],
        "worker_is_another_os_thread": result["worker"] != main_ident,
        "submit_ran_elsewhere_and_fired_here": fired,
        "stopped": default_pool().stop(10),
    }))
""")


def test_a_monkey_patched_program_runs_pool_work_on_real_threads(tmp_path):
    script = tmp_path / "program.py"
    script.write_text(PATCHED_PROGRAM)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=50, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {
        "mode": "greenlet",
        "ticks_while_pending": 20,          # the hub ran while the worker was blocked
        "got_gate": True,
        "worker_is_another_os_thread": True,
        "submit_ran_elsewhere_and_fired_here": [[True, True]],
        "stopped": True,
    }


# ================================================================ 8. thread-safety smoke


def test_eight_threads_submitting_at_once_get_every_result_exactly_once(kit):
    threads, per_thread = 8, 200
    total = threads * per_thread
    pool = kit.pool(size=4, max_queue=total)
    start = threading.Barrier(threads)
    lock = threading.Lock()
    delivered = []
    calls = collections.Counter()
    all_delivered = threading.Event()

    def task(t, i):
        with lock:
            calls[t, i] += 1
        return t, i

    def deliver(value):
        with lock:
            delivered.append(value)
            if len(delivered) == total:
                all_delivered.set()

    def submitter(t):
        start.wait(WAIT)
        for i in range(per_thread):
            pool.submit(task, t, i).addCallback(deliver)
        return t

    started = [in_thread(submitter, t, name=f"submitter-{t}") for t in range(threads)]
    for thread, _ in started:
        thread.join(3 * WAIT)
    assert [outcome for _, outcome in started] == [{"result": t} for t in range(threads)]
    assert all_delivered.wait(3 * WAIT)
    expected = {(t, i) for t in range(threads) for i in range(per_thread)}
    counted = collections.Counter(delivered)
    assert set(counted) == expected and set(counted.values()) == {1}
    assert set(calls) == expected and set(calls.values()) == {1}
    assert (pool.running, pool.queued) == (0, 0)
    assert pool.threads <= 4
