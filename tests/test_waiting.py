"""syncpb.waiting: the primitive that blocks exactly its caller.

Every wait here is bounded, and each "the other side ran first" case is
arranged with events, not sleeps.
"""

from __future__ import annotations

import threading

import gevent
import gevent.event

from syncpb.waiting import Wakeup, call_soon_in, cooperative_hub, wait_mode

from hubthread import run_in_gevent_thread

WAIT = 10.0


def test_a_thread_wakeup_set_first_returns_at_once_and_stays_set():
    wakeup = Wakeup()
    assert not wakeup.green
    wakeup.set()
    wakeup.set()  # once is enough; twice is harmless
    assert wakeup.wait(WAIT) is True
    assert wakeup.wait(0) is True


def test_a_thread_wakeup_times_out_unset():
    assert Wakeup().wait(0.01) is False


def test_a_thread_wakeup_set_from_another_thread():
    wakeup = Wakeup()
    setter = threading.Thread(target=wakeup.set)
    setter.start()
    assert wakeup.wait(WAIT) is True
    setter.join(WAIT)


def test_a_greenlet_wakeup_set_by_another_thread_before_it_waits():
    def scenario():
        wakeup = Wakeup()
        setter = threading.Thread(target=wakeup.set)
        setter.start()
        setter.join(WAIT)            # set before any watcher existed
        return wakeup.green, wakeup.wait(WAIT)

    assert run_in_gevent_thread(scenario) == (True, True)


def test_a_greenlet_wakeup_times_out_without_loop_exit():
    # nothing else is scheduled in the hub: the wait's own timer keeps it going
    assert run_in_gevent_thread(lambda: Wakeup().wait(0.01)) is False


def test_a_greenlet_wakeup_set_in_its_own_thread():
    def scenario():
        wakeup = Wakeup()
        gevent.spawn(wakeup.set)
        return wakeup.wait(WAIT)

    assert run_in_gevent_thread(scenario) is True


def test_cooperative_hub_and_wait_mode():
    assert cooperative_hub() is None and wait_mode() == "thread"

    def scenario():
        hub = gevent.get_hub()
        return cooperative_hub() is hub, wait_mode()

    assert run_in_gevent_thread(scenario) == (True, "greenlet")


def test_call_soon_in_runs_in_the_hubs_thread():
    ran_in = []
    assert call_soon_in(None, ran_in.append, "now") is None
    assert ran_in == ["now"]

    def scenario():
        hub = gevent.get_hub()
        done = gevent.event.Event()

        def from_elsewhere():
            call_soon_in(hub, lambda: (ran_in.append(threading.get_ident()), done.set()))

        other = threading.Thread(target=from_elsewhere)
        other.start()
        other.join(WAIT)
        assert done.wait(WAIT)
        return threading.get_ident()

    hub_thread = run_in_gevent_thread(scenario)
    assert ran_in == ["now", hub_thread]


def test_real_works_while_gevent_monkey_is_still_being_imported(monkeypatch):
    """Another thread may be importing gevent.monkey (it is in sys.modules,
    but has no get_original yet): real() then takes the module's own object."""
    import _thread
    import sys
    import types

    from syncpb.waiting import real

    monkeypatch.setitem(sys.modules, "gevent.monkey", types.ModuleType("gevent.monkey"))
    assert real("_thread", "allocate_lock") is _thread.allocate_lock
