"""Shared fixtures for the end-to-end tests (tests/test_e2e_*.py).

``server_factory`` (function scope)
    ``make(root, *, unix=False, start=True, **server_kwargs)`` builds a
    :class:`syncpb.Server` for ``root`` (``server_kwargs`` go to the
    constructor: ``limits=``, ``unsafe_tracebacks=``, ...), binds it to
    ``tcp://127.0.0.1:0`` -- or, with ``unix=True``, to a unix socket in the
    test's ``tmp_path`` -- starts it in its background thread (unless
    ``start=False``) and returns ``(server, address)``. Every server made is
    stopped when the test ends, even if the test already stopped it.

``connect`` (function scope)
    ``connect(address, **kwargs)`` is :func:`syncpb.connect` with a 5 s
    default timeout; every connection it made is closed when the test ends
    (before the servers stop).

``no_hub_left_in_the_main_thread`` (autouse)
    Fails a test that leaves a gevent hub in the test runner's main thread:
    every later blocking call there would wait as a greenlet and fail in
    confusing ways far from the cause (gevent scenarios run in their own
    thread: ``hubthread.run_in_gevent_thread``).

Nothing here sleeps, and nothing is shared between tests.
"""

import itertools
import sys
import threading

import pytest

import syncpb

CONNECT_TIMEOUT = 5.0
STOP_TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def no_hub_left_in_the_main_thread():
    hub_local = sys.modules.get("gevent._hub_local")
    before = None if hub_local is None else hub_local.get_hub_if_exists()
    yield
    if threading.current_thread() is not threading.main_thread():
        return
    hub_local = sys.modules.get("gevent._hub_local")
    after = None if hub_local is None else hub_local.get_hub_if_exists()
    if after is not None and after is not before:
        after.destroy(destroy_loop=True)  # (so that the tests after it are not hit)
        pytest.fail("the test left a gevent hub in the main thread: run gevent "
                    "scenarios with hubthread.run_in_gevent_thread")


@pytest.fixture
def server_factory(tmp_path):
    servers = []
    names = itertools.count()

    def make(root, *, unix=False, start=True, **server_kwargs):
        server = syncpb.Server(root, **server_kwargs)
        servers.append(server)
        if unix:
            # short file name: a unix socket path must stay under ~107 bytes
            address = server.listen(f"unix://{tmp_path}/s{next(names)}")
        else:
            address = server.listen("tcp://127.0.0.1:0")
        if start:
            server.start()
        return server, address

    yield make
    for server in servers:
        server.stop(timeout=STOP_TIMEOUT)


@pytest.fixture
def connect():
    connections = []

    def open_connection(address, **kwargs):
        kwargs.setdefault("timeout", CONNECT_TIMEOUT)
        conn = syncpb.connect(address, **kwargs)
        connections.append(conn)
        return conn

    yield open_connection
    for conn in connections:
        conn.close()
from pgserver import postgres_db, postgres_server  # noqa: F401
from tlscerts import tls_material  # noqa: F401
