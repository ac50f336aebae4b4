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
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

PEERS_DIR = Path(__file__).resolve().parent.parent / "peers"
SERVER_SCRIPT = PEERS_DIR / "twisted_server.py"
CLIENT_SCRIPT = PEERS_DIR / "twisted_client.py"

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 10.0


class ServerAddress(tuple):
    """``(host, port)`` of a running Twisted server, plus its process."""

    def __new__(cls, host, port, server):
        address = super().__new__(cls, (host, port))
        address._server = server
        return address

    host = property(lambda self: self[0])
    port = property(lambda self: self[1])
    process = property(lambda self: self._server.process)

    def log(self):
        """Everything the server wrote to stderr (Twisted's log) so far."""
        return self._server.log()


class TwistedServerProcess:
    """One ``twisted_server.py`` subprocess."""

    def __init__(self, *extra_args, script=SERVER_SCRIPT):
        self.args = [sys.executable, str(script), *extra_args]
        self.stderr_file = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
        )
        try:
            port = self._read_port()
        except BaseException:
            self.stop()
            raise
        self.address = ServerAddress(HOST, port, self)

    def log(self):
        self.stderr_file.flush()
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def _fail(self, why):
        self.stop()
        pytest.fail(
            f"Twisted server {self.args} {why}\n--- server stderr ---\n{self.log()}",
            pytrace=False,
        )

    def _read_port(self):
        """Wait for the ``PORT <n>`` line, at most STARTUP_TIMEOUT seconds."""
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        received = b""
        while b"\n" not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(f"printed no PORT line within {STARTUP_TIMEOUT}s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.process.wait(timeout=SHUTDOWN_TIMEOUT)
                self._fail(
                    f"exited with status {self.process.returncode} before "
                    f"printing its port (stdout: {received!r})"
                )
            received += chunk
        line = received.split(b"\n", 1)[0].decode("ascii", "replace").strip()
        word, _, number = line.partition(" ")
        if word != "PORT" or not number.isdigit():
            self._fail(f"printed {line!r} instead of 'PORT <number>'")
        return int(number)

    def stop(self):
        """Close stdin and wait; escalate to SIGTERM, then SIGKILL, for this
        one process only. Returns the exit status."""
        process = self.process
        if process.poll() is None:
            try:
                process.stdin.close()
            except OSError:
                pass
            for escalate in (None, process.terminate, process.kill):
                if escalate is not None:
                    escalate()
                try:
                    process.wait(timeout=SHUTDOWN_TIMEOUT)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for stream in (process.stdin, process.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        return process.returncode

    def close(self):
        self.stop()
        self.stderr_file.close()


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
