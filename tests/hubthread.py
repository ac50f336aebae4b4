"""Run a scenario as a gevent program: in its own OS thread with its own hub.

A hub left in the test runner's main thread would make every later blocking
call there wait as a greenlet (see ``syncpb.wait_mode()``), so gevent
scenarios never run in it.
"""

from __future__ import annotations

import threading

import gevent


def run_in_gevent_thread(scenario, timeout=30):
    """Run ``scenario()`` in a new OS thread that owns a gevent hub.

    The hub is created before the scenario runs, so blocking calls made
    there block only their greenlet. Returns the scenario's result.
    """
    outcome = {}

    def body():
        hub = gevent.get_hub()
        try:
            outcome["result"] = scenario()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            hub.destroy(destroy_loop=True)

    thread = threading.Thread(target=body, name="gevent-program", daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "gevent program did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
