"""Run ``python -m syncpb`` commands in subprocesses for the CLI tests.

:class:`Served` starts ``syncpb serve`` and follows its log (stderr) from a
reader thread into a queue, so a test waits for a given log line with a
deadline instead of sleeping; :func:`syncpb_run` runs a command to its end.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

WAIT = 30.0  # seconds any one step may take before the test fails


def syncpb_run(*args: str, cwd: Optional[Path] = None, input: Optional[str] = None,
               timeout: float = WAIT) -> "subprocess.CompletedProcess[str]":
    """``python -m syncpb ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "syncpb", *args], cwd=cwd, input=input,
                          capture_output=True, text=True, timeout=timeout)


class Served:
    """A ``syncpb serve`` process whose log lines can be waited for."""

    def __init__(self, args: Sequence[str], cwd: Path, *, shell_prefix: Optional[str] = None,
                 pass_fds: Sequence[int] = (), env: Optional[Dict[str, str]] = None) -> None:
        command: List[str] = [sys.executable, "-m", "syncpb", "serve", *args]
        popen_args: Any = command
        if shell_prefix is not None:  # e.g. "exec 3<&7; LISTEN_PID=$$ LISTEN_FDS=1 exec"
            quoted = " ".join("'" + part.replace("'", "'\\''") + "'" for part in command)
            popen_args = ["bash", "-c", f"{shell_prefix} {quoted}"]
        self.process = subprocess.Popen(
            popen_args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, pass_fds=tuple(pass_fds),
            env={**os.environ, **(env or {})})
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.log: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = WAIT) -> List[str]:
        """The next ``count`` log lines matching ``pattern`` (a regex)."""
        found: List[str] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(f"no log line matching {pattern!r} within {timeout} s; "
                                     f"log so far:\n" + "\n".join(self.log)) from None
            if line is None:
                raise AssertionError(f"serve exited ({self.process.wait()}) before logging "
                                     f"{pattern!r}; log:\n" + "\n".join(self.log))
            self.log.append(line)
            if re.search(pattern, line):
                found.append(line)
        return found

    def addresses(self, count: int = 1) -> List[str]:
        """The addresses of the next ``count`` "listening on" lines."""
        return [line.rsplit("listening on ", 1)[1]
                for line in self.wait_for(r"listening on \S+$", count)]

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the process, read its log to the end, return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout=WAIT)
        self._reader.join(WAIT)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.log.append(line)
        return code

    def __enter__(self) -> "Served":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT)
