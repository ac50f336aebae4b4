"""serve_forever() in a process's main thread stops gracefully on SIGTERM
and SIGINT: calls in flight finish and are answered, calls that outlast the
stop timeout fail with ConnectionLost, and the process exits cleanly."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator, Tuple

import pytest

import syncpb

ROOT = Path(__file__).resolve().parent.parent
WAIT = 20.0

SERVER = textwrap.dedent("""
    import logging, sys
    import gevent
    import syncpb

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    class Service(syncpb.Root):
        def remote_slow(self, seconds, value):
            print("entered", flush=True)
            gevent.sleep(seconds)  # the server's own work, not synchronisation
            return value

    server = syncpb.Server(Service(), stop_timeout=float(sys.argv[1]))
    print(server.listen("tcp://127.0.0.1:0"), flush=True)
    server.serve_forever()
    print("stopped", flush=True)
""")


@contextlib.contextmanager
def server_process(stop_timeout: float) -> Iterator[Tuple[subprocess.Popen, str]]:
    """The server script running; killed (by its PID) if a test left it alive."""
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(stop_timeout)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process, process.stdout.readline().strip()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_lets_the_call_in_flight_finish(signum):
    with server_process(stop_timeout=WAIT) as (process, address):
        with syncpb.connect(address, timeout=WAIT) as conn:
            d = conn.root.callRemote("slow", 0.3, "answered")
            assert process.stdout.readline().strip() == "entered"
            process.send_signal(signum)
            assert d.result(timeout=WAIT) == "answered"
        out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err
    assert out.strip() == "stopped"
    assert f"{signal.Signals(signum).name} received: stopping" in err
    assert "Traceback" not in err


def test_a_call_that_outlasts_the_stop_timeout_fails_with_connection_lost():
    with server_process(stop_timeout=0.2) as (process, address):
        with syncpb.connect(address, timeout=WAIT) as conn:
            d = conn.root.callRemote("slow", 60, "too late")
            assert process.stdout.readline().strip() == "entered"
            process.send_signal(signal.SIGTERM)
            with pytest.raises(syncpb.ConnectionLost):
                d.result(timeout=WAIT)
        _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err
    assert "1 call(s) unfinished after the stop timeout" in err
