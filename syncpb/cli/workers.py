"""``syncpb serve --workers N``: N processes serving the same TCP ports.

Theory
------
The supervisor is the process the user started. Before any gevent hub or
thread exists it binds, for every TCP listener, a *placeholder* socket with
``SO_REUSEPORT`` that never listens: it resolves port 0 and keeps the port
reserved across worker restarts, yet receives no connections (only
listening sockets join the kernel's reuse-port group). Then it forks N
workers. Each worker binds its own listening socket to the same port with
``SO_REUSEPORT`` (inherited ``fd://`` sockets are simply shared) and runs
:func:`syncpb.cli.serve.serve_once`; the kernel spreads new connections
over the workers, and a connection stays in the worker that accepted it.

The supervisor is a single-threaded event loop over ``select``: a pipe
from each worker (a byte when it is listening; end of file when it dies)
and the signal wake-up pipe (``signal.set_wakeup_fd``). SIGCHLD reaps
workers; one that exits while the service runs is logged and restarted
after a back-off that grows while restarts keep failing. A worker that
fails before the service was ever ready (a port in use, say) ends the
whole command with its exit code. SIGTERM/SIGINT are passed to every
worker (each stops gracefully) and the supervisor exits once all have,
killing any that outlive twice the stop timeout; SIGHUP is passed on
(each worker reloads its TLS certificate).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from syncpb.transport import Address

from .common import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, CliError
from .serve import Target, serve_once

__all__ = ["Supervisor"]

log = logging.getLogger("syncpb.serve")

_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 10.0
_HEALTHY_AFTER = 10.0  # a worker that ran this long resets the back-off


@dataclass
class _Worker:
    index: int
    pid: int = 0
    pipe: int = -1          # read end: a byte when ready, EOF when it exits
    started: float = 0.0
    ready: bool = False
    failures: int = 0       # consecutive quick exits
    restart_at: Optional[float] = None


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    """Forks, watches and restarts the workers of one ``syncpb serve``."""

    def __init__(self, target: Target, count: int) -> None:
        self.target = target
        self.count = count
        self.workers: Dict[int, _Worker] = {}   # pid -> worker
        self.waiting: List[_Worker] = []        # exited, to be restarted
        self.placeholders: List[socket.socket] = []
        self.stopping = False
        self.kill_at: Optional[float] = None
        self.announced = False
        self.code = EXIT_OK
        self._wake: List[int] = []  # the signal wake-up pipe (read, write)

    # -- set-up --------------------------------------------------------------------

    def _reserve_ports(self) -> None:
        """Bind a non-listening SO_REUSEPORT socket per TCP address: port 0
        resolved once for every worker, the port kept through restarts."""
        for plan in self.target.plans:
            address = plan.address
            if address is None or address.is_unix:
                continue
            sock = socket.socket(address.family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(address.sockaddr)
            except OSError as exc:
                sock.close()
                raise CliError(EXIT_UNREACHABLE, f"cannot listen on {address}: "
                                                 f"{exc.strerror or exc}") from None
            self.placeholders.append(sock)
            plan.address = Address(address.scheme, address.host, sock.getsockname()[1])

    def _fork(self, worker: _Worker) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read)
            self._become_worker(worker, write)
        os.close(write)
        worker.pid, worker.pipe, worker.started = pid, read, time.monotonic()
        worker.ready, worker.restart_at = False, None
        self.workers[pid] = worker
        log.info("worker %d started (pid %d)", worker.index, pid)

    def _become_worker(self, worker: _Worker, ready_pipe: int) -> None:
        """In the child: drop the supervisor's state, serve, never return."""
        code = EXIT_FAILED
        try:
            signal.set_wakeup_fd(-1)
            for signum in _SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            for sock in self.placeholders:
                sock.close()
            for fd in [w.pipe for w in self.workers.values() if w.pipe >= 0] + self._wake:
                os.close(fd)

            def ready() -> None:
                os.write(ready_pipe, b"r")

            code = serve_once(self.target, reuse_port=True, ready=ready)
        except CliError as exc:
            log.error("worker %d: %s", worker.index, exc.message)
            code = exc.code
        except BaseException:  # noqa: BLE001 - a worker must never return into the supervisor
            log.exception("worker %d failed", worker.index)
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    # -- the loop -------------------------------------------------------------------

    def run(self) -> int:
        """Serve with the workers until SIGTERM/SIGINT; return the exit code."""
        self._reserve_ports()
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        self._wake = [wake_read, wake_write]
        previous = {signum: signal.signal(signum, lambda *_: None) for signum in _SIGNALS}
        old_wakeup = signal.set_wakeup_fd(wake_write)
        try:
            for index in range(1, self.count + 1):
                self._fork(_Worker(index))
            while self.workers or (self.waiting and not self.stopping):
                self._step(wake_read)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(wake_read)
            os.close(wake_write)
            for sock in self.placeholders:
                sock.close()
        log.info("all workers stopped")
        return self.code

    def _timeout(self) -> Optional[float]:
        moments = [w.restart_at for w in self.waiting if w.restart_at is not None]
        if self.kill_at is not None:
            moments.append(self.kill_at)
        return None if not moments else max(min(moments) - time.monotonic(), 0.0)

    def _step(self, wake_read: int) -> None:
        pipes = {w.pipe: w for w in self.workers.values() if w.pipe >= 0}
        readable, _, _ = select.select([wake_read, *pipes], [], [], self._timeout())
        for fd in readable:
            if fd == wake_read:
                for signum in os.read(wake_read, 512):
                    self._on_signal(signum)
            else:
                self._on_pipe(pipes[fd])
        self._reap()
        now = time.monotonic()
        if self.kill_at is not None and now >= self.kill_at:
            for pid, worker in self.workers.items():
                log.warning("worker %d (pid %d) outlived the stop timeout: killing it",
                            worker.index, pid)
                os.kill(pid, signal.SIGKILL)
            self.kill_at = None
        for worker in [w for w in self.waiting if w.restart_at is not None
                       and w.restart_at <= now and not self.stopping]:
            self.waiting.remove(worker)
            self._fork(worker)

    def _on_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not self.stopping:
                log.info("%s received: stopping %d worker(s)", signal.Signals(signum).name,
                         len(self.workers))
                self._stop()
        elif signum == signal.SIGHUP:
            log.info("SIGHUP received: passing it to %d worker(s)", len(self.workers))
            for pid in self.workers:
                os.kill(pid, signal.SIGHUP)

    def _stop(self) -> None:
        self.stopping = True
        self.waiting.clear()
        self.kill_at = time.monotonic() + 2 * self.target.stop_timeout + 5
        for pid in self.workers:
            os.kill(pid, signal.SIGTERM)

    def _on_pipe(self, worker: _Worker) -> None:
        if os.read(worker.pipe, 64):
            worker.ready = True
            if not self.announced and len(self.workers) == self.count and all(
                    w.ready for w in self.workers.values()):
                self.announced = True
                addresses = ", ".join(str(p.address) if p.address else p.text
                                      for p in self.target.plans)
                log.info("ready: %d workers listening on %s", self.count, addresses)
        else:  # the worker is gone; waitpid says how
            os.close(worker.pipe)
            worker.pipe = -1

    def _reap(self) -> None:
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if worker.pipe >= 0:
                os.close(worker.pipe)
                worker.pipe = -1
            self._exited(worker, status)

    def _exited(self, worker: _Worker, status: int) -> None:
        if self.stopping:
            log.info("worker %d (pid %d) %s", worker.index, worker.pid, _describe(status))
            return
        if not self.announced:  # never became a service: a configuration problem
            log.error("worker %d (pid %d) %s before it was ready; stopping", worker.index,
                      worker.pid, _describe(status))
            code = os.waitstatus_to_exitcode(status)
            self.code = code if code > 0 else EXIT_FAILED
            self._stop()
            return
        ran = time.monotonic() - worker.started
        worker.failures = 0 if ran >= _HEALTHY_AFTER else worker.failures + 1
        delay = 0.0 if worker.failures == 0 else min(
            _BACKOFF_FIRST * 2 ** (worker.failures - 1), _BACKOFF_MAX)
        log.warning("worker %d (pid %d) %s after %.1f s; restarting it%s", worker.index,
                    worker.pid, _describe(status), ran,
                    f" in {delay:g} s" if delay else "")
        worker.restart_at = time.monotonic() + delay
        self.waiting.append(worker)
