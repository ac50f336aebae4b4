"""Leader/follower waiting in the threaded session: hand-offs never strand a caller."""

from __future__ import annotations

import os
import threading

import pytest

import syncpb


class Slow(syncpb.Root):
    """``hold()`` answers only once ``release()`` is called."""

    def __init__(self, expected=1):
        self.gate = None
        self.count = 0
        self.expected = expected
        self.held = threading.Event()  # set once ``expected`` calls are held

    def remote_hold(self):
        import gevent.event
        if self.gate is None:  # one gate for every held call (created in the hub's thread)
            self.gate = gevent.event.Event()
        self.count += 1
        if self.count >= self.expected:
            self.held.set()
        self.gate.wait()
        return "released"

    def remote_release(self):
        self.gate.set()
        return True

    def remote_echo(self, value):
        return value


def test_a_timed_out_follower_passes_leadership_on(server_factory):
    """Leader and a timing-out follower both leave; a third caller still gets
    its answer (the wake-up meant to make someone lead is not lost)."""
    root = Slow()
    _, address = server_factory(root)
    with syncpb.connect(address, timeout=5) as conn:
        hold = conn.root.callRemote("hold")
        assert root.held.wait(10)
        results = {}
        waiting = threading.Barrier(3)

        def timing_out():
            waiting.wait()
            try:
                conn.root.call("hold", timeout=0.2)  # never answered in time
            except syncpb.CallTimeout:
                results["timeout"] = True

        def patient():
            waiting.wait()
            results["patient"] = hold.result(timeout=20)

        threads = [threading.Thread(target=timing_out), threading.Thread(target=patient)]
        for thread in threads:
            thread.start()
        waiting.wait()
        threads[0].join(10)
        assert results.get("timeout") is True
        assert conn.root.call("release", timeout=10) is True  # a new caller leads
        threads[1].join(20)
        assert results["patient"] == "released"


def test_connection_loss_reaches_blocked_callers_as_connection_lost(server_factory):
    root = Slow(expected=4)
    server, address = server_factory(root)
    conn = syncpb.connect(address, timeout=5)
    errors = []
    started = threading.Barrier(5)

    def blocked():
        started.wait()
        try:
            conn.root.hold()
        except Exception as exc:  # the type is the point of the test
            errors.append(exc)

    threads = [threading.Thread(target=blocked) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    assert root.held.wait(10)  # all four calls are in the server, waiting
    conn.close()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 4
    assert all(isinstance(e, syncpb.ConnectionLost) for e in errors), errors


class Caller(syncpb.Root):
    """Calls back the client's object it is given."""

    def remote_ping_me(self, ref):
        return ref.callRemote("ping").result(timeout=10)


class Pingable(syncpb.Referenceable):
    def remote_ping(self):
        return "pong"


def test_closing_ends_the_dispatcher_threads(server_factory):
    _, address = server_factory(Caller())
    conn = syncpb.connect(address, timeout=5)
    assert conn.root.ping_me(Pingable()) == "pong"  # the server's call ran on a worker
    workers = conn._session._dispatcher.threads
    assert workers and all(thread.is_alive() for thread in workers)
    conn.close()
    for thread in workers:
        thread.join(10)
    assert not any(thread.is_alive() for thread in workers)


def test_deferred_settled_elsewhere_wakes_the_reading_waiter(server_factory):
    """A connection's Deferred settled on another thread (as paging's is, by
    the dispatcher) while its waiter reads the socket and nothing else
    arrives: the waiter must wake at once. (It used to sleep in select
    until its timeout; with no timeout, for ever: pytest-timeout would end
    the test.)"""
    _, address = server_factory(Slow())
    with syncpb.connect(address, timeout=10) as conn:
        session = conn._session
        d = syncpb.Deferred()
        d._waiter = session.waiter  # as paging's getAllPages does
        waiter_reads = threading.Event()

        def settle_once_the_waiter_reads():
            for _ in range(10_000_000):  # bounded: the main thread leads within a few
                if session._leader is not None and session._leader_thread == main:
                    break
                os.sched_yield()
            waiter_reads.set()
            d.callback("settled")

        main = threading.get_ident()
        helper = threading.Thread(target=settle_once_the_waiter_reads)
        helper.start()
        assert d.result() == "settled"
        helper.join(10)
        assert waiter_reads.is_set()
        assert conn.root.echo(1) == 1  # the connection is still fine
