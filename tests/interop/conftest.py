"""Fixtures that run real Twisted PB peers in subprocesses.

The peers live in ``tests/peers/`` and run under ``sys.executable`` (the
interpreter running pytest, which must have Twisted installed):

``twisted_server`` (module scope)
    Starts ``tests/peers/twisted_server.py`` once per test module and yields
    its address, a ``ServerAddress`` — a ``(host, port)`` tuple, i.e.
    ``("127.0.0.1", port)``, that also has ``.host``, ``.port``,
    ``.process`` (the ``subprocess.Popen``) and ``.log()`` (the server's
    stderr so far, i.e. Twisted's log).

``twisted_server_factory`` (function scope)
    A function ``start(*extra_args)`` that starts another server with extra
    command-line arguments, e.g. ``start("--unsafe-tracebacks")``, and
    returns its ``ServerAddress``. ``script=`` runs another script that
    speaks the same startup protocol (prints ``PORT <n>``, stops on stdin
    EOF). Every server it started is stopped when the test ends.

``run_twisted_client``
    A function ``run(host, port, *extra_args, timeout=45, check=True)`` that
    runs ``tests/peers/twisted_client.py`` against ``host:port`` and returns
    its parsed JSON report (``{"results": {name: {"ok", "detail"}}, "ok",
    "steps", "timed_out", "error", "elapsed", "twisted"}``). With
    ``check=True`` a non-zero exit status or unparsable output fails the test
    with the client's stdout and stderr; with ``check=False`` the report is
    returned as is (a fabricated ``{"results": {}, "error": ...}`` report
    when the output is not JSON) with ``returncode`` and ``stderr`` added.

Servers are started without sleeping: the fixture waits (select, 30 s
deadline) for the ``PORT <n>`` line. They are stopped by closing their stdin;
if one is still alive after 10 s it gets SIGTERM and then SIGKILL — always
addressed to that one PID. Server stderr goes to a temporary file so a
chatty log can never block the server on a full pipe.
"""

import json
import subprocess
import sys

import pytest

from twisted_process import PEERS_DIR, SERVER_SCRIPT, TwistedServerProcess

CLIENT_SCRIPT = PEERS_DIR / "twisted_client.py"


@pytest.fixture(scope="module")
def twisted_server():
    server = TwistedServerProcess()
    try:
        yield server.address
    finally:
        server.close()


@pytest.fixture
def twisted_server_factory():
    servers = []

    def start(*extra_args, script=SERVER_SCRIPT):
        server = TwistedServerProcess(*extra_args, script=script)
        servers.append(server)
        return server.address

    try:
        yield start
    finally:
        for server in servers:
            server.close()


def _run_client(host, port, *extra_args, timeout=45.0, check=True):
    args = [sys.executable, str(CLIENT_SCRIPT), str(host), str(port), *extra_args]
    try:
        completed = subprocess.run(args, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # subprocess.run killed the client
        pytest.fail(
            f"Twisted client {args} still running after {timeout}s\n"
            f"--- stdout ---\n{(e.stdout or b'').decode('utf-8', 'replace')}\n"
            f"--- stderr ---\n{(e.stderr or b'').decode('utf-8', 'replace')}",
            pytrace=False,
        )
    stdout = completed.stdout.decode("utf-8", "replace")
    stderr = completed.stderr.decode("utf-8", "replace")
    try:
        report = json.loads(stdout)
    except ValueError:
        report = None
    if check and (completed.returncode != 0 or not isinstance(report, dict)):
        pytest.fail(
            f"Twisted client {args} exited with status {completed.returncode}\n"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            pytrace=False,
        )
    if not check:
        if not isinstance(report, dict):
            report = {"results": {}, "ok": False, "error": f"unparsable output: {stdout!r}"}
        report["returncode"] = completed.returncode
        report["stderr"] = stderr
    return report


@pytest.fixture
def run_twisted_client():
    return _run_client
