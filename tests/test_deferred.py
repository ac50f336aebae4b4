"""Tests for :mod:`syncpb.failure` and :mod:`syncpb.deferred`.

No test sleeps to synchronise: threads meet through Events, Barriers and a
spy on ``_add_settled_hook`` that reports when a waiter is really waiting.
"""

from __future__ import annotations

import gc
import io
import logging
import sys
import threading
from typing import Any, Callable, List, Optional, Tuple

import pytest

from hubthread import run_in_gevent_thread, run_in_thread

from syncpb import errors
from syncpb.deferred import (
    DEFAULT_WAITER,
    Deferred,
    fail,
    gather,
    maybe_deferred,
    maybeDeferred,
    succeed,
)
from syncpb.errors import AlreadyCalledError, CallTimeout, RemoteError
from syncpb.failure import Failure, NoCurrentExceptionError

REMOTE_VALUE_ERROR_PARENTS = [
    "builtins.ValueError",
    "builtins.Exception",
    "builtins.BaseException",
    "builtins.object",
]

JOIN_TIMEOUT = 30.0


class AppError(errors.Error):
    """An application error, travelling as a subclass of pb.Error."""


# -- helpers ---------------------------------------------------------------


def remote_value_error(traceback_text: Optional[str] = None) -> RemoteError:
    """Return a RemoteError as if a peer raised ValueError("bad value")."""
    return RemoteError(
        "builtins.ValueError",
        "bad value",
        remote_traceback=traceback_text,
        remote_parents=REMOTE_VALUE_ERROR_PARENTS,
    )


def raise_value_error(_: Any = None) -> None:
    """Raise ValueError from a named frame that tracebacks can show."""
    raise ValueError("boom")


def captured_failure() -> Failure:
    """Return a Failure with a real traceback."""
    try:
        raise_value_error()
    except ValueError:
        return Failure()
    raise AssertionError("unreachable")


class FiringWaiter:
    """A waiter that fires the Deferred it is asked to wait for."""

    def __init__(self, value: Any, spurious_returns: int = 0) -> None:
        self.value = value
        self.spurious_returns = spurious_returns
        self.calls: List[Tuple[Deferred, Optional[float]]] = []

    def wait(self, deferred: Deferred, timeout: Optional[float]) -> None:
        self.calls.append((deferred, timeout))
        if len(self.calls) > self.spurious_returns:
            deferred.callback(self.value)


class ForbiddenWaiter:
    """A waiter that must never be used."""

    def wait(self, deferred: Deferred, timeout: Optional[float]) -> None:
        raise AssertionError(f"ForbiddenWaiter used for {deferred!r}")


def on_hook_registered(d: Deferred, action: Callable[[], None]) -> None:
    """Run ``action`` right after a waiter registers a settled hook on ``d``."""

    class Spy(type(d)):  # type: ignore[misc,valid-type]
        __slots__ = ()  # same layout, so the instance's class can be swapped

        def _add_settled_hook(self, hook: Callable[[], None]) -> None:
            super()._add_settled_hook(hook)
            action()

    d.__class__ = Spy


def noted(log: List[Any], item: Any, value: Any) -> Any:
    """Append ``item`` to ``log`` and return ``value`` (for one-line callbacks)."""
    log.append(item)
    return value


def start_thread(target: Callable[..., Any], *args: Any) -> threading.Thread:
    """Start and return a daemon thread."""
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def join(thread: threading.Thread) -> None:
    """Join ``thread`` and fail if it hangs."""
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive(), "thread did not finish"


def unhandled_records(caplog: pytest.LogCaptureFixture, marker: str) -> List[str]:
    """Return the "Unhandled error" log messages that mention ``marker``."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "syncpb"
        and record.levelno == logging.ERROR
        and "Unhandled error in Deferred" in record.getMessage()
        and marker in record.getMessage()
    ]


# -- Failure ---------------------------------------------------------------


def test_failure_captures_current_exception() -> None:
    f = captured_failure()
    assert isinstance(f.value, ValueError)
    assert f.type is ValueError
    assert f.tb is not None


def test_failure_without_current_exception_raises() -> None:
    with pytest.raises(NoCurrentExceptionError):
        Failure()
    assert issubclass(NoCurrentExceptionError, TypeError)


def test_failure_wraps_instance_without_traceback() -> None:
    exc = KeyError("k")
    f = Failure(exc)
    assert f.value is exc
    assert f.type is KeyError
    assert f.tb is None
    assert "KeyError: 'k'" in f.getTraceback()


def test_failure_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        Failure("not an exception")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Failure(ValueError("x"), KeyError)
    with pytest.raises(TypeError):
        Failure(exc_type=ValueError)


def test_check_local_classes() -> None:
    f = Failure(KeyError("k"))
    assert f.check(KeyError) is KeyError
    assert f.check(LookupError) is LookupError
    assert f.check(ValueError) is None
    assert f.check(ValueError, LookupError, KeyError) is LookupError
    assert f.check() is None


def test_check_local_by_name() -> None:
    f = Failure(KeyError("k"))
    assert f.check("builtins.KeyError") == "builtins.KeyError"
    assert f.check("builtins.Exception") == "builtins.Exception"
    assert f.check("builtins.ValueError") is None


def test_check_local_syncpb_error_by_wire_and_plain_name() -> None:
    f = Failure(errors.ConnectionLost("gone"))
    assert f.check("twisted.spread.pb.PBConnectionLost")
    assert f.check("syncpb.errors.ConnectionLost")
    assert f.check(errors.SyncPBError) is errors.SyncPBError


def test_check_rejects_other_entries() -> None:
    with pytest.raises(TypeError):
        Failure(KeyError("k")).check(42)  # type: ignore[arg-type]


def test_check_remote_error_by_parents() -> None:
    f = Failure(remote_value_error())
    assert f.check(ValueError) is ValueError
    assert f.check(KeyError, ValueError) is ValueError
    assert f.check(KeyError) is None
    assert f.check("builtins.ValueError") == "builtins.ValueError"
    assert f.check("builtins.Exception") == "builtins.Exception"
    assert f.check("builtins.KeyError") is None
    assert f.check(RemoteError) is RemoteError


def test_check_remote_error_by_twisted_wire_name() -> None:
    remote = RemoteError(
        "app.Refused",
        "no",
        remote_parents=["app.Refused", "twisted.spread.pb.Error", "builtins.Exception"],
    )
    f = Failure(remote)
    assert f.check(errors.Error) is errors.Error
    assert f.check(AppError) is None
    assert f.check("app.Refused") == "app.Refused"


def test_check_remote_error_for_locally_defined_class() -> None:
    name = errors.wire_name_of(AppError)
    f = Failure(RemoteError(name, "no", remote_parents=[name, "twisted.spread.pb.Error"]))
    assert f.check(AppError) is AppError


def test_trap_returns_match() -> None:
    f = Failure(remote_value_error())
    assert f.trap(KeyError, ValueError) is ValueError


def test_trap_reraises_with_traceback() -> None:
    f = captured_failure()
    with pytest.raises(ValueError) as info:
        f.trap(KeyError)
    assert info.value is f.value
    assert any(entry.name == "raise_value_error" for entry in info.traceback)


def test_trap_in_errback_passes_same_exception_on() -> None:
    exc = ValueError("x")
    seen: List[Failure] = []
    d = Deferred()
    d.addErrback(lambda f: f.trap(KeyError))
    d.addErrback(seen.append)
    d.errback(exc)
    assert len(seen) == 1
    assert seen[0].value is exc
    assert d.result() is None


def test_trap_in_errback_recovers_on_match() -> None:
    d = fail(KeyError("k"))
    d.addErrback(lambda f: f.trap(KeyError))
    assert d.result() is KeyError


def test_get_error_message() -> None:
    assert Failure(ValueError("plain")).getErrorMessage() == "plain"
    assert Failure(remote_value_error()).getErrorMessage() == "bad value"


def test_get_traceback_local() -> None:
    text = captured_failure().getTraceback()
    assert "raise_value_error" in text
    assert "ValueError: boom" in text


def test_get_traceback_includes_remote_traceback() -> None:
    remote_text = 'Traceback (most recent call last):\n  File "srv.py", line 3\nValueError: bad'
    text = Failure(remote_value_error(remote_text)).getTraceback()
    assert "Remote traceback:" in text
    assert 'File "srv.py", line 3' in text
    assert text.endswith("\n")


def test_get_traceback_remote_without_text() -> None:
    text = Failure(remote_value_error()).getTraceback()
    assert "Remote traceback" not in text
    assert "bad value" in text


def test_print_traceback() -> None:
    out = io.StringIO()
    captured_failure().printTraceback(out)
    assert "ValueError: boom" in out.getvalue()


def test_raise_exception_keeps_traceback() -> None:
    f = captured_failure()
    with pytest.raises(ValueError) as info:
        f.raiseException()
    assert info.value is f.value
    assert any(entry.name == "raise_value_error" for entry in info.traceback)


def test_failure_repr() -> None:
    assert repr(Failure(ValueError("boom"))) == "<Failure builtins.ValueError: boom>"
    assert repr(Failure(remote_value_error())) == (
        "<Failure remote builtins.ValueError: bad value>"
    )


# -- chain semantics -------------------------------------------------------


def test_callback_before_and_after_adding() -> None:
    early = Deferred()
    early.addCallback(lambda v: v + 1)
    early.callback(1)
    late = succeed(1)
    late.addCallback(lambda v: v * 10)
    assert early.result() == 2
    assert late.result() == 10


def test_add_methods_return_self() -> None:
    d = Deferred()
    other = Deferred()
    assert d.addCallback(lambda v: v) is d
    assert d.addErrback(lambda f: f) is d
    assert d.addBoth(lambda v: v) is d
    assert d.addCallbacks(lambda v: v, lambda f: f) is d
    assert d.chainDeferred(other) is d


def test_callback_args_and_kwargs() -> None:
    d = Deferred()
    d.addCallback(lambda v, a, b=0: (v, a, b), "a", b="b")
    d.callback("v")
    assert d.result() == ("v", "a", "b")


def test_errback_args_and_kwargs() -> None:
    d = Deferred()
    d.addErrback(lambda f, a, b=0: (f.getErrorMessage(), a, b), "a", b="b")
    d.errback(ValueError("m"))
    assert d.result() == ("m", "a", "b")


def test_add_callbacks_with_args() -> None:
    ok = Deferred()
    ok.addCallbacks(
        lambda v, x, y=None: ("cb", v, x, y),
        lambda f, x, y=None: ("eb", x, y),
        callbackArgs=(1,),
        callbackKeywords={"y": 2},
        errbackArgs=(3,),
        errbackKeywords={"y": 4},
    )
    ok.callback("v")
    bad = Deferred()
    bad.addCallbacks(
        lambda v, x: ("cb", x),
        lambda f, x, y=None: ("eb", x, y),
        callbackArgs=(1,),
        errbackArgs=(3,),
        errbackKeywords={"y": 4},
    )
    bad.errback(ValueError())
    assert ok.result() == ("cb", "v", 1, 2)
    assert bad.result() == ("eb", 3, 4)


def test_add_callbacks_requires_callables() -> None:
    d = Deferred()
    with pytest.raises(TypeError):
        d.addCallbacks(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        d.addCallbacks(lambda v: v, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        d.addCallback(42)  # type: ignore[arg-type]


def test_callback_raising_switches_to_errback() -> None:
    path: List[str] = []
    d = Deferred()
    d.addCallback(raise_value_error)
    d.addCallback(lambda v: path.append("skipped callback"))
    d.addErrback(lambda f: noted(path, f"errback {f.getErrorMessage()}", "recovered"))
    d.addCallback(lambda v: path.append(f"callback {v}"))
    d.callback(None)
    assert path == ["errback boom", "callback recovered"]


def test_errback_returning_failure_stays_on_error_path() -> None:
    path: List[str] = []
    d = Deferred()
    d.addErrback(lambda f: noted(path, "first", f))
    d.addCallback(lambda v: path.append("skipped"))
    d.addErrback(lambda f: noted(path, "second", 7))
    d.errback(KeyError("k"))
    assert path == ["first", "second"]
    assert d.result() == 7


def test_errback_raising_stays_on_error_path() -> None:
    d = fail(KeyError("k"))
    d.addErrback(lambda f: raise_value_error())
    with pytest.raises(ValueError):
        d.result()


def test_add_both_sees_results_and_failures() -> None:
    seen: List[Any] = []
    ok = succeed(1).addBoth(lambda r: noted(seen, r, "ok"))
    bad = fail(KeyError("k")).addBoth(lambda r: noted(seen, type(r), "handled"))
    assert seen == [1, Failure]
    assert ok.result() == "ok"
    assert bad.result() == "handled"


def test_errback_accepts_exception_failure_and_current() -> None:
    exc = ValueError("instance")
    from_instance = fail(exc)
    from_failure = Deferred()
    failure = Failure(KeyError("f"))
    from_failure.errback(failure)
    from_current = Deferred()
    try:
        raise_value_error()
    except ValueError:
        from_current.errback()
    with pytest.raises(ValueError) as info:
        from_instance.result()
    assert info.value is exc
    from_failure.addErrback(lambda f: f is failure)
    assert from_failure.result() is True
    with pytest.raises(ValueError, match="boom"):
        from_current.result()


def test_errback_without_current_exception_does_not_fire() -> None:
    d = Deferred()
    with pytest.raises(TypeError):
        d.errback()
    with pytest.raises(TypeError):
        d.errback("not an error")  # type: ignore[arg-type]
    assert not d.called


def test_callback_with_deferred_is_rejected() -> None:
    d = Deferred()
    with pytest.raises(TypeError):
        d.callback(Deferred())
    assert not d.called


def test_firing_twice_raises_already_called() -> None:
    d = succeed(1)
    with pytest.raises(AlreadyCalledError):
        d.callback(2)
    with pytest.raises(AlreadyCalledError):
        d.errback(ValueError())
    assert d.result() == 1


def test_called_and_final_and_paused() -> None:
    inner = Deferred()
    d = Deferred()
    assert not d.called and not d.final and not d.paused
    d.addCallback(lambda _: inner)
    d.callback(None)
    assert d.called and d.paused and not d.final
    inner.callback(3)
    assert d.final and not d.paused
    assert d.result() == 3


def test_returned_pending_deferred_pauses_chain() -> None:
    inner = Deferred()
    seen: List[Any] = []
    d = Deferred()
    d.addCallback(lambda _: inner)
    d.addCallback(lambda v: noted(seen, v, v * 2))
    d.callback("ignored")
    assert seen == []
    inner.callback(21)
    assert seen == [21]
    assert d.result() == 42
    assert inner.result() is None


def test_returned_fired_deferred_is_taken_at_once() -> None:
    inner = succeed(5)
    d = succeed(None).addCallback(lambda _: inner)
    assert d.final
    assert d.result() == 5
    assert inner.result() is None


def test_returned_failed_deferred_switches_to_errback() -> None:
    inner = Deferred()
    d = succeed(None).addCallback(lambda _: inner)
    d.addErrback(lambda f: f.check(KeyError))
    inner.errback(KeyError("k"))
    assert d.result() is KeyError
    assert inner.result() is None


def test_errback_returning_deferred_resumes_callback_path() -> None:
    inner = Deferred()
    d = fail(KeyError("k")).addErrback(lambda f: inner)
    inner.callback("back")
    assert d.result() == "back"


def test_callback_returning_own_deferred_fails() -> None:
    d = Deferred()
    d.addCallback(lambda _: d)
    d.callback(None)
    with pytest.raises(TypeError):
        d.result()


def test_callbacks_added_to_paused_deferred_wait() -> None:
    inner = Deferred()
    d = succeed(1).addCallback(lambda _: inner)
    seen: List[Any] = []
    d.addCallback(seen.append)
    assert seen == []
    inner.callback(2)
    assert seen == [2]


def test_callback_may_add_callbacks_to_its_own_deferred() -> None:
    seen: List[str] = []
    d = Deferred()

    def first(value: Any) -> Any:
        d.addCallback(lambda v: noted(seen, f"added {v}", v))
        seen.append("first")
        return value + 1

    d.addCallback(first)
    d.callback(1)
    assert seen == ["first", "added 2"]
    assert d.result() == 2


def test_chain_deferred_success_and_failure() -> None:
    target = Deferred()
    source = Deferred()
    source.chainDeferred(target)
    source.callback("v")
    bad_target = Deferred()
    fail(KeyError("k")).chainDeferred(bad_target)
    assert target.result() == "v"
    assert source.result() is None
    with pytest.raises(KeyError):
        bad_target.result()


def test_deferred_repr() -> None:
    pending = Deferred()
    inner = Deferred()
    paused = succeed(None).addCallback(lambda _: inner)
    assert "pending" in repr(pending)
    assert "current result: 3" in repr(succeed(3))
    assert f"waiting on Deferred at 0x{id(inner):x}" in repr(paused)


def test_settled_hooks() -> None:
    inner = Deferred()
    d = Deferred()
    calls: List[str] = []
    d._add_settled_hook(lambda: calls.append("paused"))

    def removed() -> None:
        calls.append("removed")

    d._add_settled_hook(removed)
    d._remove_settled_hook(removed)
    d.addCallback(lambda _: inner)
    d.callback(None)
    assert calls == ["paused"]
    d._add_settled_hook(lambda: calls.append("immediate"))
    assert calls == ["paused", "immediate"]


# -- helpers: succeed, fail, maybe_deferred ------------------------------


def test_succeed_and_fail() -> None:
    assert succeed("x").result() == "x"
    with pytest.raises(KeyError):
        fail(KeyError("k")).result()
    with pytest.raises(ValueError):
        fail(Failure(ValueError())).result()


def test_fail_without_argument_uses_current_exception() -> None:
    try:
        raise_value_error()
    except ValueError:
        d = fail()
    with pytest.raises(ValueError, match="boom"):
        d.result()


def test_maybe_deferred() -> None:
    existing = Deferred()
    assert maybe_deferred(lambda a, b=0: a + b, 1, b=2).result() == 3
    assert maybe_deferred(lambda: existing) is existing
    with pytest.raises(ValueError):
        maybe_deferred(raise_value_error).result()
    with pytest.raises(KeyError):
        maybe_deferred(lambda: Failure(KeyError("k"))).result()
    assert maybeDeferred is maybe_deferred


# -- result() ----------------------------------------------------------------


def test_result_raises_with_original_traceback_every_time() -> None:
    d = succeed(None).addCallback(raise_value_error)
    with pytest.raises(ValueError) as first:
        d.result()
    with pytest.raises(ValueError) as second:
        d.result()
    assert first.value is second.value
    assert any(entry.name == "raise_value_error" for entry in second.traceback)


def test_result_timeout_raises_call_timeout() -> None:
    d = Deferred()
    with pytest.raises(CallTimeout) as info:
        d.result(timeout=0.01)
    assert isinstance(info.value, TimeoutError)
    assert d._settled_hooks == []
    d.callback("late")
    assert d.result(timeout=0) == "late"


def test_result_timeout_while_paused() -> None:
    inner = Deferred()
    d = succeed(None).addCallback(lambda _: inner)
    with pytest.raises(CallTimeout):
        d.result(timeout=0.01)
    inner.callback(1)
    assert d.result(timeout=0) == 1


def test_result_fired_from_thread_started_after_waiting() -> None:
    d = Deferred()
    ran_in: List[int] = []
    d.addCallback(lambda v: noted(ran_in, threading.get_ident(), v * 2))
    threads: List[threading.Thread] = []
    on_hook_registered(d, lambda: threads.append(start_thread(d.callback, 21)))
    assert d.result(timeout=JOIN_TIMEOUT) == 42
    join(threads[0])
    assert ran_in == [threads[0].ident]


def test_result_in_worker_thread_woken_by_main_thread() -> None:
    d = Deferred()
    waiting = threading.Event()
    on_hook_registered(d, waiting.set)
    results: List[Any] = []
    worker = start_thread(lambda: results.append(d.result(timeout=JOIN_TIMEOUT)))
    assert waiting.wait(JOIN_TIMEOUT)
    d.callback("hello")
    join(worker)
    assert results == ["hello"]


def test_result_waits_for_inner_fired_in_other_thread() -> None:
    inner = Deferred()
    d = succeed(None).addCallback(lambda _: inner).addCallback(lambda v: v + 1)
    threads: List[threading.Thread] = []
    on_hook_registered(inner, lambda: threads.append(start_thread(inner.callback, 1)))
    assert d.result(timeout=JOIN_TIMEOUT) == 2
    join(threads[0])


def test_result_from_own_callback_raises_runtime_error() -> None:
    errors_seen: List[BaseException] = []
    d = Deferred()

    def reentrant(value: Any) -> Any:
        try:
            d.result(timeout=JOIN_TIMEOUT)
        except RuntimeError as exc:
            errors_seen.append(exc)
        return value

    d.addCallback(reentrant)
    d.callback(1)
    assert len(errors_seen) == 1
    assert d.result() == 1


def test_result_cycle_of_paused_deferreds_raises() -> None:
    a = Deferred()
    b = Deferred()
    a.addCallback(lambda _: b)
    b.addCallback(lambda _: a)
    a.callback(None)
    b.callback(None)
    with pytest.raises(RuntimeError):
        a.result(timeout=JOIN_TIMEOUT)


# -- pluggable waiting -----------------------------------------------------


def test_custom_waiter_used_for_target() -> None:
    d = Deferred()
    waiter = FiringWaiter("driven")
    d._waiter = waiter
    assert d.result(timeout=5) == "driven"
    assert len(waiter.calls) == 1
    target, timeout = waiter.calls[0]
    assert target is d
    assert timeout is not None and 0 < timeout <= 5


def test_custom_waiter_spurious_returns_loop() -> None:
    d = Deferred()
    waiter = FiringWaiter("x", spurious_returns=2)
    d._waiter = waiter
    assert d.result() == "x"
    assert [call[1] for call in waiter.calls] == [None, None, None]


def test_custom_waiter_used_for_chained_inner() -> None:
    inner = Deferred()
    waiter = FiringWaiter(10)
    inner._waiter = waiter
    outer = succeed(None).addCallback(lambda _: inner).addCallback(lambda v: v + 1)
    outer._waiter = ForbiddenWaiter()
    assert outer.result() == 11
    assert [call[0] for call in waiter.calls] == [inner]


def test_custom_waiter_on_deeply_nested_inner() -> None:
    leaf = Deferred()
    waiter = FiringWaiter("leaf")
    leaf._waiter = waiter

    def nested(depth: int) -> Deferred:
        if depth == 0:
            return leaf
        d = Deferred()
        d._waiter = ForbiddenWaiter()
        d.addCallback(lambda _: nested(depth - 1))
        d.callback(None)
        return d

    top = nested(100)
    assert top.paused
    assert top.result() == "leaf"
    assert len(waiter.calls) == 1


def test_chain_deferred_waits_through_source_waiter() -> None:
    source = Deferred()
    waiter = FiringWaiter("from source")
    source._waiter = waiter
    target = Deferred()
    source.chainDeferred(target)
    assert target.result(timeout=5) == "from source"
    assert waiter.calls[0][0] is source


def test_custom_waiter_timeout_raises_call_timeout() -> None:
    class TimedWaiter:
        def __init__(self) -> None:
            self.timeouts: List[Optional[float]] = []

        def wait(self, deferred: Deferred, timeout: Optional[float]) -> None:
            self.timeouts.append(timeout)
            DEFAULT_WAITER.wait(deferred, timeout)

    d = Deferred()
    waiter = TimedWaiter()
    d._waiter = waiter
    with pytest.raises(CallTimeout):
        d.result(timeout=0.02)
    assert waiter.timeouts
    assert all(t is not None and 0 < t <= 0.02 for t in waiter.timeouts)


# -- gather ------------------------------------------------------------------


def test_gather_keeps_order() -> None:
    children = [Deferred() for _ in range(3)]
    gathered = gather(children)
    children[2].callback("c")
    children[0].callback("a")
    assert not gathered.called
    children[1].callback("b")
    assert gathered.result() == ["a", "b", "c"]
    assert children[0].result() == "a"


def test_gather_empty_and_already_fired() -> None:
    assert gather([]).result() == []
    assert gather([succeed(1), succeed(2)]).result() == [1, 2]


def test_gather_fails_with_first_failure(caplog: pytest.LogCaptureFixture) -> None:
    children = [Deferred() for _ in range(3)]
    gathered = gather(children)
    first = Failure(KeyError("first-gather-error"))
    children[1].errback(first)
    assert gathered.called
    children[0].errback(ValueError("second-gather-error"))
    children[2].callback("late")
    seen: List[Failure] = []
    gathered.addErrback(seen.append)
    assert seen == [first]
    assert [child.result() for child in children] == [None, None, "late"]
    del children, gathered, first, seen
    gc.collect()
    assert unhandled_records(caplog, "gather-error") == []


def test_gather_without_consuming_errors_leaves_children_failed() -> None:
    child = Deferred()
    gathered = gather([child], consume_errors=False)
    child.errback(KeyError("k"))
    with pytest.raises(KeyError):
        gathered.result()
    with pytest.raises(KeyError):
        child.result()


def test_gather_result_drives_children_waiters() -> None:
    children = [Deferred() for _ in range(3)]
    waiters = [FiringWaiter(index * 10) for index in range(3)]
    for child, waiter in zip(children, waiters):
        child._waiter = waiter
    assert gather(children).result(timeout=5) == [0, 10, 20]
    assert [[call[0] for call in w.calls] for w in waiters] == [[c] for c in children]


def test_gather_result_drives_inner_waiter_of_child() -> None:
    inner = Deferred()
    inner._waiter = FiringWaiter("inner")
    plain = Deferred()
    paused = succeed(None).addCallback(lambda _: inner)
    gathered = gather([paused, plain])
    plain.callback("plain")
    assert gathered.result(timeout=5) == ["inner", "plain"]


def test_gather_result_with_children_fired_from_threads() -> None:
    children = [Deferred() for _ in range(2)]
    gathered = gather(children)
    threads: List[threading.Thread] = []

    def fire_all() -> None:
        threads.extend(start_thread(c.callback, i) for i, c in enumerate(children))

    on_hook_registered(gathered, fire_all)
    assert gathered.result(timeout=JOIN_TIMEOUT) == [0, 1]
    for thread in threads:
        join(thread)


# -- unhandled errors --------------------------------------------------------


def test_unhandled_failure_logged_at_gc(caplog: pytest.LogCaptureFixture) -> None:
    d = Deferred()
    d.errback(ValueError("nobody-cares"))
    del d
    gc.collect()
    messages = unhandled_records(caplog, "nobody-cares")
    assert len(messages) == 1
    assert "ValueError: nobody-cares" in messages[0]


def test_unhandled_failure_from_callback_logs_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(_: Any) -> None:
        raise KeyError("exploded-in-callback")

    d = succeed(None).addCallback(explode)
    del d
    gc.collect()
    messages = unhandled_records(caplog, "exploded-in-callback")
    assert len(messages) == 1
    assert "in explode" in messages[0]


def test_handled_failures_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    def scenario() -> None:
        fail(ValueError("handled-by-errback")).addErrback(lambda f: None)
        by_result = fail(ValueError("handled-by-result"))
        with pytest.raises(ValueError):
            by_result.result()
        inner = fail(ValueError("handed-to-outer"))
        outer = succeed(None).addCallback(lambda _: inner).addErrback(lambda f: None)
        assert outer.result() is None

    scenario()
    gc.collect()
    assert unhandled_records(caplog, "handled-by") == []
    assert unhandled_records(caplog, "handed-to-outer") == []


def test_failure_handled_then_raised_again_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = fail(ValueError("raised-again"))
    with pytest.raises(ValueError):
        d.result()
    d.addErrback(lambda f: f)
    del d
    gc.collect()
    assert len(unhandled_records(caplog, "raised-again")) == 1


def test_pending_and_paused_deferreds_are_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def scenario() -> None:
        inner = Deferred()
        paused = succeed(None).addCallback(lambda _: inner)
        assert paused.paused

    scenario()
    gc.collect()
    assert not any(r.levelno >= logging.ERROR for r in caplog.records if r.name == "syncpb")


# -- threads -----------------------------------------------------------------


def test_callback_added_after_firing_runs_in_adding_thread() -> None:
    d = succeed(1)
    ran_in: List[int] = []
    run_in_thread(lambda: d.addCallback(lambda v: ran_in.append(threading.get_ident())))
    assert len(ran_in) == 1
    assert ran_in[0] != threading.get_ident()


def test_callback_added_during_run_is_picked_up_by_running_thread() -> None:
    d = Deferred()
    in_first = threading.Event()
    proceed = threading.Event()
    ran_in: List[int] = []

    def first(value: Any) -> Any:
        in_first.set()
        assert proceed.wait(JOIN_TIMEOUT)
        return value

    d.addCallback(first)
    firer = start_thread(d.callback, 1)
    assert in_first.wait(JOIN_TIMEOUT)
    d.addCallback(lambda v: noted(ran_in, threading.get_ident(), v + 1))
    assert ran_in == []
    proceed.set()
    join(firer)
    assert ran_in == [firer.ident]
    assert d.result() == 2


def test_concurrent_add_and_fire_runs_each_callback_once() -> None:
    n_threads, per_thread = 8, 200
    d = Deferred()
    barrier = threading.Barrier(n_threads + 1)
    calls: List[Tuple[int, int]] = []

    def record(value: Any, tid: int, index: int) -> Any:
        calls.append((tid, index))
        return value

    def adder(tid: int) -> None:
        barrier.wait(JOIN_TIMEOUT)
        for index in range(per_thread):
            d.addCallback(record, tid, index)

    def firer() -> None:
        barrier.wait(JOIN_TIMEOUT)
        d.callback("v")

    threads = [start_thread(adder, tid) for tid in range(n_threads)]
    threads.append(start_thread(firer))
    for thread in threads:
        join(thread)
    assert d.result(timeout=JOIN_TIMEOUT) == "v"
    assert len(calls) == len(set(calls)) == n_threads * per_thread
    for tid in range(n_threads):
        assert [i for t, i in calls if t == tid] == list(range(per_thread))


# -- deep chains -------------------------------------------------------------


def test_deep_callback_chain() -> None:
    d = Deferred()
    for _ in range(5000):
        d.addCallback(lambda v: v + 1)
    d.callback(0)
    assert d.result() == 5000


def test_long_chain_of_paused_deferreds_unwinds_iteratively() -> None:
    count = max(5000, sys.getrecursionlimit() * 2)
    ds = [Deferred() for _ in range(count)]
    for outer, inner in zip(ds, ds[1:]):
        outer.addCallback(lambda _, nxt=inner: nxt)
    for outer in ds[:-1]:
        outer.callback(None)
    assert all(d.paused for d in ds[:-1])
    ds[-1].callback("bottom")
    assert ds[0].result() == "bottom"
    assert not any(d.paused for d in ds)


def test_nested_returned_deferreds() -> None:
    leaf = Deferred()

    def nested(depth: int) -> Deferred:
        d = Deferred()
        d.addCallback(lambda _: leaf if depth == 0 else nested(depth - 1))
        d.addCallback(lambda v: v + 1)
        d.callback(None)
        return d

    top = nested(100)
    assert not top.final
    leaf.callback(0)
    assert top.result() == 101


# -- gevent ------------------------------------------------------------------


run_with_hub = run_in_gevent_thread  # a fresh OS thread with its own hub


def test_greenlet_waiting_in_result_does_not_stall_hub() -> None:
    gevent = pytest.importorskip("gevent")
    d = Deferred()
    order: List[Any] = []

    def waiter() -> Any:
        order.append("waiting")
        value = d.result(timeout=JOIN_TIMEOUT)
        order.append(("got", value))
        return value

    def firer() -> None:
        order.append("firing")
        d.callback(5)

    def scenario() -> Any:
        first = gevent.spawn(waiter)
        second = gevent.spawn(firer)
        gevent.joinall([first, second], timeout=JOIN_TIMEOUT)
        return first.value

    assert run_with_hub(scenario) == 5
    assert order == ["waiting", "firing", ("got", 5)]


def test_greenlet_woken_by_other_os_thread() -> None:
    gevent = pytest.importorskip("gevent")
    d = Deferred()
    ran_in: List[int] = []
    d.addCallback(lambda v: noted(ran_in, threading.get_ident(), v))
    threads: List[threading.Thread] = []
    on_hook_registered(d, lambda: threads.append(start_thread(d.callback, 7)))

    def scenario() -> Tuple[Any, int]:
        greenlet = gevent.spawn(d.result, JOIN_TIMEOUT)
        greenlet.join(timeout=JOIN_TIMEOUT)
        return greenlet.value, threading.get_ident()

    value, hub_thread = run_with_hub(scenario)
    join(threads[0])
    assert value == 7
    assert ran_in == [threads[0].ident]
    assert ran_in[0] != hub_thread


def test_greenlet_timeout_keeps_other_greenlets_running() -> None:
    gevent = pytest.importorskip("gevent")
    d = Deferred()
    ticks: List[int] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(1)
            gevent.sleep(0)

    def waiter() -> str:
        try:
            d.result(timeout=0.05)
        except CallTimeout:
            return "timed out"
        finally:
            stop.set()
        return "fired"

    def scenario() -> Any:
        waiting = gevent.spawn(waiter)
        ticking = gevent.spawn(ticker)
        gevent.joinall([waiting, ticking], timeout=JOIN_TIMEOUT)
        return waiting.value

    assert run_with_hub(scenario) == "timed out"
    assert ticks
