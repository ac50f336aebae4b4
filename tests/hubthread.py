"""Run a scenario as a gevent program: in its own OS thread with its own hub.

A hub left in the test runner's main thread would make every later blocking
call there wait as a greenlet (see ``syncpb.wait_mode()``), so gevent
scenarios never run in it.
"""

from __future__ import annotations

import threading

import gevent


def run_in_thread(func, timeout=30, name="test-thread"):
    """Run ``func()`` in a new daemon OS thread; return its value or raise
    its error (and fail if it has not finished within ``timeout``)."""
    outcome = {}

    def body():
        try:
            outcome["result"] = func()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            outcome["error"] = exc

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{name} did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def run_in_gevent_thread(scenario, timeout=30):
    """Run ``scenario()`` in a new OS thread that owns a gevent hub.

    The hub is created before the scenario runs, so blocking calls made
    there block only their greenlet. Returns the scenario's result.
    """
    def with_hub():
        hub = gevent.get_hub()
        try:
            return scenario()
        finally:
            hub.destroy(destroy_loop=True)

    return run_in_thread(with_hub, timeout, "gevent-program")
