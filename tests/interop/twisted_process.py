"""A Twisted peer in a subprocess, for the interop tests (not a fixture module).

It is started without sleeping: the first line it prints (``PORT <n>``, or
whatever :meth:`TwistedServerProcess._started` expects) is awaited with
``select`` and a deadline. It is stopped by closing its stdin, then
SIGTERM, then SIGKILL, always to that one PID; its stderr goes to a
temporary file so a chatty log can never block it on a full pipe.
"""

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
            self._started(self._first_line())
        except BaseException:
            self.close()
            raise

    def _started(self, line):
        """Take the first line: ``PORT <n>``."""
        word, _, number = line.partition(" ")
        if word != "PORT" or not number.isdigit():
            self._fail(f"printed {line!r} instead of 'PORT <number>'")
        self.address = ServerAddress(HOST, int(number), self)

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

    def _first_line(self):
        """Wait for the first line, at most STARTUP_TIMEOUT seconds."""
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        received = b""
        while b"\n" not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(f"printed nothing within {STARTUP_TIMEOUT}s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.process.wait(timeout=SHUTDOWN_TIMEOUT)
                self._fail(
                    f"exited with status {self.process.returncode} before "
                    f"saying it is ready (stdout: {received!r})"
                )
            received += chunk
        return received.split(b"\n", 1)[0].decode("utf-8", "replace").strip()

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
