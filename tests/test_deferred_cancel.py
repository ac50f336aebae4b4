"""``Deferred.cancel()``, ``Deferred.addTimeout()`` and :mod:`syncpb.timers`.

The rules are Twisted's (``twisted.internet.defer.Deferred``). Nothing here
sleeps to synchronise: threads meet through Events and a spy on
``_add_settled_hook`` that reports when a waiter is really waiting; real
timeouts are tiny and are waited for with generous ones.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from typing import Any, Callable, List, Optional, Tuple

import gevent
import gevent.event
import pytest

from hubthread import run_in_gevent_thread, run_in_thread

from syncpb import timers
from syncpb.deferred import Deferred, gather, succeed
from syncpb.errors import AlreadyCalledError, CallTimeout, CancelledError
from syncpb.failure import Failure

WAIT = 30.0
TINY = 0.001


# -- helpers ---------------------------------------------------------------


def outcome(d: Deferred, timeout: Optional[float] = WAIT) -> Tuple[str, Any]:
    """``("ok", value)`` or ``("error", exception)`` of a Deferred's result."""
    try:
        return "ok", d.result(timeout=timeout)
    except BaseException as exc:  # noqa: BLE001
        return "error", exc


def on_hook_registered(d: Deferred, action: Callable[[], None]) -> None:
    """Run ``action`` right after a waiter registers a settled hook on ``d``."""

    class Spy(type(d)):  # type: ignore[misc,valid-type]
        __slots__ = ()

        def _add_settled_hook(self, hook: Callable[[], None]) -> None:
            super()._add_settled_hook(hook)
            action()

    d.__class__ = Spy


run_with_hub = run_in_gevent_thread  # a fresh OS thread with its own hub


class RecordingClock:
    """The shared timer thread, remembering the calls it was given."""

    def __init__(self) -> None:
        self.calls: List[Any] = []

    def callLater(self, delay: float, function: Callable[..., Any], *args: Any) -> Any:  # noqa: N802
        call = timers.THREAD_CLOCK.callLater(delay, function, *args)
        self.calls.append((delay, call))
        return call


# -- cancel ------------------------------------------------------------------


def test_cancel_without_canceller_fails_and_ignores_one_late_firing() -> None:
    d = Deferred()
    errors: List[Failure] = []
    d.addErrback(errors.append)
    d.cancel()
    assert d.called
    assert len(errors) == 1 and errors[0].check(CancelledError)
    d.callback("late")  # the producer did not know: ignored once
    with pytest.raises(AlreadyCalledError):
        d.errback(ValueError("twice"))
    assert d.result() is None  # the errback handled the CancelledError


def test_cancel_calls_canceller_once_then_fails_with_cancelled_error() -> None:
    seen: List[Deferred] = []
    d = Deferred(canceller=seen.append)
    d.cancel()
    assert seen == [d]
    kind, error = outcome(d)
    assert kind == "error" and isinstance(error, CancelledError)
    # Twisted's rule: with a canceller nothing is suppressed (it was to stop the producer)
    with pytest.raises(AlreadyCalledError):
        d.callback("late")
    d.cancel()  # already fired: nothing happens
    assert seen == [d]


def test_canceller_may_fire_the_deferred_itself() -> None:
    d = Deferred(canceller=lambda d: d.callback("partial result"))
    d.cancel()
    assert d.result() == "partial result"
    failing = Deferred(canceller=lambda d: d.errback(KeyError("gone")))
    failing.cancel()
    with pytest.raises(KeyError):
        failing.result()


def test_canceller_that_raises_leaves_the_deferred_unfired() -> None:
    def broken(d: Deferred) -> None:
        raise RuntimeError("canceller broke")

    d = Deferred(canceller=broken)
    with pytest.raises(RuntimeError, match="canceller broke"):
        d.cancel()
    assert not d.called
    d.callback(1)
    assert d.result() == 1


def test_cancelling_a_fired_deferred_does_nothing() -> None:
    calls: List[Deferred] = []
    d = Deferred(canceller=calls.append)
    d.callback(42)
    d.cancel()
    assert calls == [] and d.result() == 42
    failed = Deferred()
    failed.errback(ValueError("own error"))
    failed.cancel()
    with pytest.raises(ValueError, match="own error"):
        failed.result()


def test_cancel_forwards_to_the_deferred_the_chain_waits_on() -> None:
    inner_cancelled: List[Deferred] = []
    outer_cancelled: List[Deferred] = []
    inner = Deferred(canceller=inner_cancelled.append)
    outer = Deferred(canceller=outer_cancelled.append)
    outer.addCallback(lambda _: inner)
    outer.callback("go")
    assert outer.paused
    outer.cancel()
    assert inner_cancelled == [inner] and outer_cancelled == []
    kind, error = outcome(outer)
    assert kind == "error" and isinstance(error, CancelledError)
    assert inner.result() is None  # its result went on to the outer chain


def test_cancel_from_another_thread_wakes_a_blocked_result() -> None:
    d = Deferred()
    threads: List[threading.Thread] = []

    def cancel_elsewhere() -> None:
        thread = threading.Thread(target=d.cancel, daemon=True)
        threads.append(thread)
        thread.start()

    on_hook_registered(d, cancel_elsewhere)
    # no timeout: only the cancel can end this wait (run_in_thread fails if it hangs)
    kind, error = run_in_thread(lambda: outcome(d, None))
    assert kind == "error" and isinstance(error, CancelledError)
    threads[0].join(WAIT)
    assert not threads[0].is_alive()


def test_cancel_wakes_a_result_that_waits_through_chain_deferred() -> None:
    source = Deferred()
    fed = Deferred()
    source.chainDeferred(fed)  # fed.result() waits on source's settling
    on_hook_registered(source, lambda: threading.Thread(target=fed.cancel, daemon=True).start())
    waiter = threading.Thread(target=lambda: box.append(outcome(fed, None)), daemon=True)
    box: List[Tuple[str, Any]] = []
    waiter.start()
    waiter.join(WAIT)  # no timeout in result(): only the cancel can end that wait
    assert not waiter.is_alive(), "cancel did not wake the waiter"
    assert box[0][0] == "error" and isinstance(box[0][1], CancelledError)
    source.callback("late")  # fed has no canceller: its late firing is ignored
    assert source.result() is None


def test_canceller_can_ignore_a_firing_already_under_way() -> None:
    # What a connection's canceller does when the answer was already taken
    # off its table: the producer's one firing still to come is ignored.
    d = Deferred(canceller=lambda d: d._ignore_next_fire())
    d.cancel()
    d.errback(ValueError("answer that was on its way"))
    with pytest.raises(CancelledError):
        d.result()


def test_greenlet_blocked_in_result_wakes_on_cancel_by_other_greenlet_or_thread() -> None:
    def scenario() -> List[str]:
        results: List[str] = []
        for canceller_kind in ("greenlet", "thread"):
            d = Deferred()
            waiting = gevent.event.Event()
            on_hook_registered(d, waiting.set)

            def waiter(d: Deferred = d) -> str:
                try:
                    d.result()  # no timeout: only the cancel ends this wait
                except CancelledError:
                    return "cancelled"
                return "fired"

            g = gevent.spawn(waiter)
            assert waiting.wait(WAIT)
            if canceller_kind == "greenlet":
                gevent.spawn(d.cancel).join(WAIT)
            else:
                thread = threading.Thread(target=d.cancel, daemon=True)
                thread.start()
                thread.join(WAIT)
            g.join(WAIT)
            results.append(g.value)
        return results

    assert run_with_hub(scenario) == ["cancelled", "cancelled"]


def test_gather_cancel_cancels_every_child() -> None:
    cancelled: List[Deferred] = []
    children = [Deferred(canceller=cancelled.append) for _ in range(3)]
    done = succeed("already")
    gathered = gather(children + [done])
    gathered.cancel()
    assert cancelled == children
    with pytest.raises(CancelledError):
        gathered.result()
    assert done.result() == "already"


# -- addTimeout --------------------------------------------------------------


def test_add_timeout_fails_with_call_timeout() -> None:
    d = Deferred().addTimeout(TINY)
    with pytest.raises(CallTimeout) as info:
        d.result(timeout=WAIT)
    assert isinstance(info.value, TimeoutError)
    assert not isinstance(info.value, CancelledError)
    d.callback("too late")  # no canceller: the producer's late answer is ignored


def test_add_timeout_covers_earlier_callbacks_not_later_ones() -> None:
    seen: List[str] = []

    def note(failure: Failure, where: str) -> Failure:
        seen.append(f"{where}:{failure.type.__name__}")
        return failure

    d = Deferred()
    d.addErrback(note, "before")
    d.addTimeout(TINY)
    d.addErrback(note, "after")
    with pytest.raises(CallTimeout):
        d.result(timeout=WAIT)
    assert seen == ["before:CancelledError", "after:CallTimeout"]


def test_result_first_stops_the_timer() -> None:
    clock = RecordingClock()
    d = Deferred().addTimeout(WAIT, clock)
    [(delay, call)] = clock.calls
    assert delay == WAIT and call.active()
    d.callback("in time")
    assert d.result() == "in time"
    assert not call.active()


def test_add_timeout_on_a_fired_deferred_stops_its_timer_at_once() -> None:
    clock = RecordingClock()
    d = succeed(5).addTimeout(WAIT, clock)
    assert d.result() == 5
    assert not clock.calls[0][1].active()


def test_plain_cancel_is_not_turned_into_a_timeout() -> None:
    clock = RecordingClock()
    d = Deferred().addTimeout(WAIT, clock)
    d.cancel()
    with pytest.raises(CancelledError):
        d.result()
    assert not clock.calls[0][1].active()


def test_on_timeout_cancel_replaces_the_result() -> None:
    seen: List[Tuple[Optional[type], float]] = []

    def on_timeout(value: Any, timeout: float) -> str:
        seen.append((value.check(CancelledError), timeout))
        return "fallback"

    d = Deferred().addTimeout(TINY, onTimeoutCancel=on_timeout)
    assert d.result(timeout=WAIT) == "fallback"
    assert seen == [(CancelledError, TINY)]


def test_a_canceller_result_passes_a_timeout_unchanged() -> None:
    d = Deferred(canceller=lambda d: d.callback("canceller's answer")).addTimeout(TINY)
    assert d.result(timeout=WAIT) == "canceller's answer"
    other = Deferred(canceller=lambda d: d.errback(KeyError("own"))).addTimeout(TINY)
    with pytest.raises(KeyError):
        other.result(timeout=WAIT)


def test_add_timeout_with_twisteds_own_clock() -> None:
    from twisted.internet.task import Clock as TwistedClock

    clock = TwistedClock()
    d = Deferred().addTimeout(10, clock)
    clock.advance(9.5)
    assert not d.called
    clock.advance(1)
    with pytest.raises(CallTimeout):
        d.result()
    fast = Deferred().addTimeout(10, clock)
    fast.callback(1)
    assert clock.getDelayedCalls() == []


def test_add_timeout_inside_a_hub_uses_its_loop() -> None:
    def scenario() -> Tuple[Any, Any, Any]:
        clock = timers.default_clock()
        slow = Deferred().addTimeout(TINY)
        fast = Deferred().addTimeout(WAIT)
        fast.callback("fast")
        try:
            slow.result(timeout=WAIT)
            slow_outcome = "fired"
        except CallTimeout:
            slow_outcome = "timed out"
        return type(clock), slow_outcome, fast.result()

    clock_type, slow, fast = run_with_hub(lambda: gevent.spawn(scenario).get(timeout=WAIT))
    assert clock_type is timers.HubClock
    assert (slow, fast) == ("timed out", "fast")
    assert run_in_thread(timers.default_clock) is timers.THREAD_CLOCK


def test_hub_timeout_runs_in_a_greenlet_not_the_hub() -> None:
    def scenario() -> bool:
        hub = gevent.get_hub()
        ran_in: List[Any] = []
        done = gevent.event.Event()

        def record() -> None:
            ran_in.append(gevent.getcurrent())
            done.set()

        call = timers.HubClock(hub).callLater(TINY, record)
        assert done.wait(WAIT)
        assert not call.active()
        return ran_in[0] is not hub

    assert run_with_hub(scenario)


def test_hub_timer_cancelled_from_another_thread_never_runs() -> None:
    def scenario() -> List[str]:
        ran: List[str] = []
        clock = timers.HubClock(gevent.get_hub())
        doomed = clock.callLater(0.05, ran.append, "doomed")
        thread = threading.Thread(target=doomed.cancel, daemon=True)
        thread.start()
        thread.join(WAIT)
        done = gevent.event.Event()
        clock.callLater(0.1, done.set)  # later than the doomed one would have run
        assert done.wait(WAIT)
        assert not doomed.active()
        return ran

    assert run_with_hub(scenario) == []


# -- the shared timer thread ---------------------------------------------------


def test_thread_clock_runs_calls_in_time_order_in_one_thread() -> None:
    clock = timers.ThreadClock("test-timers")
    ran: List[Tuple[float, int]] = []
    done = threading.Event()
    calls: List[timers.ThreadCall] = []

    def record(index: int) -> None:
        ran.append((calls[index].time, threading.get_ident()))

    for index, delay in enumerate([0.03, 0.01, 0.02, 0.0]):
        calls.append(clock.callLater(delay, record, index))
    clock.callLater(0.04, done.set)  # due after all of them
    assert done.wait(WAIT)
    times = [when for when, _ in ran]
    assert len(times) == 4 and times == sorted(times)
    assert len({ident for _, ident in ran}) == 1
    assert ran[0][1] != threading.get_ident()


def test_thread_clock_compacts_cancelled_entries() -> None:
    clock = timers.ThreadClock("test-timers")
    calls = [clock.callLater(WAIT * 10, lambda: None) for _ in range(3 * timers.COMPACT_AT)]
    for call in calls:
        call.cancel()
        call.cancel()  # twice: harmless
    assert clock.pending() == 0
    assert len(clock._heap) <= timers.COMPACT_AT + 1
    assert not any(call.active() for call in calls)


def test_thread_clock_survives_a_failing_call(caplog: pytest.LogCaptureFixture) -> None:
    clock = timers.ThreadClock("test-timers")
    done = threading.Event()

    def broken() -> None:
        raise ValueError("timer function broke")

    with caplog.at_level(logging.ERROR, logger="syncpb"):
        clock.callLater(0.0, broken)
        clock.callLater(0.001, done.set)
        assert done.wait(WAIT)
    assert "timer function broke" in caplog.text


CHILD = textwrap.dedent("""
    import os, sys, threading
    from syncpb import timers

    fired = threading.Event()
    timers.THREAD_CLOCK.callLater(0.0, fired.set)
    assert fired.wait(30)
    timers.THREAD_CLOCK.callLater(3600, print, "never")  # pending at exit
    pid = os.fork()
    if pid == 0:  # the timer thread did not survive the fork: it starts again
        in_child = threading.Event()
        timers.THREAD_CLOCK.callLater(0.0, in_child.set)
        os._exit(0 if in_child.wait(30) else 1)
    _, status = os.waitpid(pid, 0)
    print("child", os.waitstatus_to_exitcode(status))
""")


def test_timer_thread_restarts_after_fork_and_never_keeps_the_process_alive() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["child", "0"]
