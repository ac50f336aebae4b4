"""connect() never waits for ever by default, and says what did not arrive.

The silent peers here are plain listening sockets on 127.0.0.1 that accept
(the kernel does) and never speak: what a client meets at a port where
something other than a PB server listens, or a TLS port.
"""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import syncpb
from syncpb.client import CONNECT_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def silent_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_the_default_timeout_is_finite_and_documented():
    default = inspect.signature(syncpb.connect).parameters["timeout"].default
    assert default == CONNECT_TIMEOUT == 10.0
    assert "CONNECT_TIMEOUT" in syncpb.connect.__doc__


def test_a_silent_peer_fails_with_the_address_and_what_did_not_arrive(silent_port):
    address = f"tcp://127.0.0.1:{silent_port}"
    with pytest.raises(syncpb.ConnectionFailed) as caught:
        syncpb.connect(address, timeout=0.3)
    message = str(caught.value)
    assert address in message and "no PB handshake arrived within 0.3 s" in message
    assert "tls://" in message  # the hint for a plain client at a TLS port


def test_a_port_nobody_listens_on_fails_at_once():
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))  # bound, not listening: refused
        address = f"tcp://127.0.0.1:{placeholder.getsockname()[1]}"
        with pytest.raises(syncpb.ConnectionFailed, match="cannot connect to " + address):
            syncpb.connect(address)


def test_a_tls_client_at_a_silent_port_fails_too(silent_port, tls_material):
    from syncpb.tls import client_context
    address = f"tls://127.0.0.1:{silent_port}"
    with pytest.raises(syncpb.ConnectionFailed) as caught:
        syncpb.connect(address, timeout=0.3, tls=client_context(ca=tls_material.ca.cert_path))
    assert str(caught.value) == f"connected to {address}, but no TLS handshake within 0.3 s"


SCRIPT = textwrap.dedent("""
    import gc, socket
    import syncpb
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    address = "tcp://127.0.0.1:%d" % listener.getsockname()[1]

    def attempts():
        for attempt in range(3):
            try:
                syncpb.connect(address, timeout=0.2)
            except syncpb.ConnectionFailed as exc:
                print("caught", type(exc).__name__, flush=True)
""")
IN_THREAD = SCRIPT + "attempts()\ngc.collect()\n"
IN_GREENLET = SCRIPT + "import gevent\ngevent.spawn(attempts).join()\ngc.collect()\n"


@pytest.mark.parametrize("script", [IN_THREAD, IN_GREENLET], ids=["thread", "greenlet"])
def test_a_handled_connect_failure_is_not_reported_again_at_exit(script):
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n").count("caught ConnectionFailed") == 3
    assert "Unhandled" not in done.stderr and "ConnectionLost" not in done.stderr, done.stderr
