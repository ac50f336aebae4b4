"""syncpb._csockio.Lock, the sessions' lock under the compiled core, behaves
as the standard library's lock: every check runs against both.

The signal checks wait on a held lock in the main thread while another
thread, once it sees the main thread waiting, sends it SIGUSR1
(pytest-timeout owns SIGALRM): a wait that signals cannot interrupt would
not run the handler until the lock is released, which the checks see.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
from typing import Any, Callable

import pytest

from syncpb import session, speedups

SOCKIO = speedups.load("_csockio")
FACTORIES = {"standard": _thread.allocate_lock,
             "compiled": SOCKIO.allocate_lock if SOCKIO is not None else None}


@pytest.fixture(params=sorted(FACTORIES))
def make(request: Any) -> Callable[[], Any]:
    factory = FACTORIES[request.param]
    if factory is None:
        pytest.skip("syncpb._csockio is not built (or SYNCPB_PURE=1)")
    return factory


class Interrupted(Exception):
    pass


def send_to_main(signum: int) -> None:
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signum)


def test_the_sessions_use_the_compiled_lock_with_the_compiled_core() -> None:
    compiled = speedups.load("_csessioncore") is not None and not speedups.pure_forced()
    lock = session._allocate_lock()
    if compiled:
        assert SOCKIO is not None and type(lock) is SOCKIO.Lock
    else:
        assert type(lock) is _thread.LockType


def test_acquire_and_release(make: Callable[[], Any]) -> None:
    lock = make()
    assert lock.locked() is False
    assert lock.acquire() is True
    assert lock.locked() is True
    assert lock.acquire(False) is False
    assert lock.acquire(blocking=False) is False
    lock.release()
    assert lock.locked() is False
    assert lock.acquire(False) is True
    lock.release()
    assert "unlocked" in repr(lock)


def test_a_context_manager(make: Callable[[], Any]) -> None:
    lock = make()
    with lock as taken:
        assert taken is True
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(KeyError):
        with lock:
            raise KeyError("inside")
    assert not lock.locked()


def test_the_same_errors(make: Callable[[], Any]) -> None:
    lock = make()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(False, 1)
    with pytest.raises(ValueError, match="must be positive"):
        lock.acquire(True, -2)
    with pytest.raises(OverflowError):
        lock.acquire(True, 1e20)
    with pytest.raises(TypeError):
        lock.acquire(timeout="soon")
    assert not lock.locked()


def test_a_timeout_on_a_held_lock_gives_false(make: Callable[[], Any]) -> None:
    lock = make()
    lock.acquire()
    assert lock.acquire(True, 0) is False
    assert lock.acquire(timeout=0.01) is False
    assert lock.locked()
    lock.release()
    assert lock.acquire(timeout=0.01) is True
    lock.release()


def test_a_waiting_thread_takes_it_once_released(make: Callable[[], Any]) -> None:
    lock = make()
    lock.acquire()
    took = threading.Event()

    def waiter() -> None:
        lock.acquire()
        took.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not took.is_set()
    lock.release()
    thread.join(30)
    assert took.is_set() and lock.locked()
    lock.release()


def test_another_thread_may_release_it(make: Callable[[], Any]) -> None:
    lock = make()  # (a follower's wake-up: held by the sleeper, released by the waker)
    lock.acquire()
    thread = threading.Thread(target=lock.release)
    thread.start()
    thread.join(30)
    assert not lock.locked()
    assert lock.acquire(timeout=30) is True
    lock.release()


def wait_on(lock: Any) -> bool:
    """The main thread's wait (its frame tells the helper it is waiting)."""
    return lock.acquire()


def signal_the_wait(stop: threading.Event) -> bool:
    """From a helper thread: once the main thread is in :func:`wait_on`,
    send it SIGUSR1 until ``stop`` is set (a signal that lands just before
    the wait begins is only handled when the next one interrupts it), at
    most 200 times. True when ``stop`` was set."""
    main = threading.main_thread().ident
    assert main is not None
    for _ in range(10_000):  # (the main thread gets there within a few steps)
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_code is wait_on.__code__:
            break
        stop.wait(0.001)
    for _ in range(200):
        send_to_main(signal.SIGUSR1)
        if stop.wait(0.05):
            return True
    return False


def test_a_signal_handler_s_exception_ends_the_wait(make: Callable[[], Any]) -> None:
    lock = make()
    lock.acquire()
    ended = threading.Event()
    raised: list = []
    outcome: dict = {}

    def handler(signum: int, frame: Any) -> None:
        if not raised:  # (once: later signals may land after the wait ended)
            raised.append(signum)
            raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        def sender_run() -> None:
            outcome["ended while waiting"] = signal_the_wait(ended)
            if not outcome["ended while waiting"]:
                lock.release()  # (the wait never ended: let it, for a clear failure)

        sender = threading.Thread(target=sender_run)
        sender.start()
        try:
            with pytest.raises(Interrupted):
                wait_on(lock)
        finally:
            ended.set()
            sender.join(30)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert outcome == {"ended while waiting": True}
    assert lock.locked()  # (still ours, not taken twice)
    lock.release()


def test_a_signal_handler_runs_during_the_wait_and_the_wait_goes_on(
        make: Callable[[], Any]) -> None:
    lock = make()
    lock.acquire()
    handled = threading.Event()
    seen: dict = {}

    def helper() -> None:
        seen["handled while waiting"] = signal_the_wait(handled)
        lock.release()

    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: handled.set())
    try:
        thread = threading.Thread(target=helper)
        thread.start()
        assert wait_on(lock) is True
        thread.join(30)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen == {"handled while waiting": True}
    assert lock.locked()
    lock.release()
