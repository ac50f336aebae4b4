"""Shared helpers of the soak scripts (benchmarks/soak/*.py).

* :func:`raise_nofile`: lift this process's open-file limit up to the hard one.
* :func:`rss_kib`: a process's resident memory (``VmRSS`` in /proc/PID/status).
* :class:`ServerProcess`: a ``syncpb.Server`` (:mod:`soakserver`) in a child
  process, on TCP, a unix socket or TLS; stopped by closing its stdin, killed
  by its PID only when it does not stop.
* :func:`make_certs`, :func:`client_tls`, :func:`soak_connect`: TLS material
  minted at run time and connecting with it.
* :func:`make_payload`: varied call payloads (ints, text, bytes, nested
  lists and dicts, up to a few KB).
* :func:`print_figures`: the ``figure: value`` lines every script prints.

Nothing here talks to anything but 127.0.0.1 and unix sockets in a
temporary directory.
"""

from __future__ import annotations

import os
import random
import resource
import select
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import syncpb  # noqa: E402

#: How the child is started: ``soakserver`` imported under its own name, so
#: the copy tags of its classes (``soakserver.SoakCounter``) match the client's.
_LAUNCH = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; "
           "import soakserver; soakserver.main(sys.argv[3:])")
#: Longest wait for a child server to print its address.
START_TIMEOUT = 30.0


def raise_nofile(want: Optional[int] = None) -> Tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to ``want`` (default: the hard limit),
    never above the hard limit; return ``(soft, hard)`` now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else want
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def rss_kib(pid: Optional[int] = None) -> int:
    """Resident memory of ``pid`` (default: this process) in KiB, or -1 when
    the process is gone."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return -1


def cpu_seconds(pid: Optional[int] = None) -> float:
    """User plus system CPU time of ``pid`` (default: this process), in
    seconds; -1.0 when the process is gone."""
    try:
        with open(f"/proc/{pid or os.getpid()}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return -1.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mib(kib: int) -> str:
    """``kib`` as MiB with one decimal."""
    return f"{kib / 1024:.1f} MiB"


def make_certs(directory: str) -> str:
    """Mint a CA, a server certificate for 127.0.0.1/localhost and a client
    certificate into ``directory`` (``ca.pem``, ``server.pem``, ...)."""
    from syncpb.tls import certs
    certs.write_dev_set(directory, ["localhost", "127.0.0.1", "::1"], client_name="soak")
    return directory


def client_tls(certdir: str) -> Any:
    """The client TLS settings that trust the CA in ``certdir``."""
    from syncpb import tls
    return tls.client_context(ca=os.path.join(certdir, "ca.pem"))


def soak_connect(address: str, certdir: Optional[str] = None, timeout: float = 30.0,
                 **kwargs: Any) -> syncpb.Connection:
    """:func:`syncpb.connect`, with TLS settings from ``certdir`` for a
    ``tls://``/``tls+unix://`` address."""
    if address.startswith("tls"):
        if certdir is None:
            raise ValueError(f"{address} needs certdir")
        kwargs["tls"] = client_tls(certdir)
    return syncpb.connect(address, timeout=timeout, **kwargs)


class ServerProcess:
    """A soak server (:mod:`soakserver`) in a child process.

    Args:
        transport: ``"tcp"``, ``"unix"`` or ``"tls"``.
        workdir: a directory for the unix socket (and, for TLS, holding the
            certificates made by :func:`make_certs`).
        certdir: where the TLS certificates are (default: ``workdir``).
        nofile: the child's open-file limit (default: its hard limit).
        extra: more ``soakserver`` options.
    """

    def __init__(self, transport: str, workdir: str, certdir: Optional[str] = None,
                 nofile: Optional[int] = None, extra: Iterable[str] = ()) -> None:
        self.transport = transport
        self.certdir = certdir or workdir
        args = [sys.executable, "-c", _LAUNCH, HERE, REPO, "--listen", transport,
                "--workdir", workdir, "--certdir", self.certdir]
        if nofile is not None:
            args += ["--nofile", str(nofile)]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.proc.pid
        self.address = ""
        try:
            self.address = self._read_address()
        except BaseException:
            self.kill()
            raise

    def _read_address(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"soak server pid {self.pid} did not start in time")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            line = self.proc.stdout.readline().decode("utf-8", "replace").strip()
            if not line:
                raise RuntimeError(f"soak server pid {self.pid} exited: {self.proc.wait()}")
            if line.startswith("ADDR "):
                return line[5:]

    def rss_kib(self) -> int:
        """The server's resident memory in KiB."""
        return rss_kib(self.pid)

    def connect(self, timeout: float = 30.0, **kwargs: Any) -> syncpb.Connection:
        """A new connection to the server."""
        return soak_connect(self.address, self.certdir, timeout, **kwargs)

    def stats(self, timeout: float = 30.0,
              conn: Optional[syncpb.Connection] = None) -> Dict[str, Any]:
        """The server's :meth:`soakserver.SoakRoot.remote_stats`, over ``conn``
        or a connection of its own (counted in ``sessions``: subtract 1)."""
        if conn is not None:
            return dict(conn.root.call("stats", True, timeout=timeout))
        with self.connect(timeout) as own:
            return dict(own.root.call("stats", True, timeout=timeout))

    def kill(self) -> None:
        """SIGKILL the child (by its PID) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()
        self._close_pipes()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the child to stop (close its stdin); kill it after ``timeout``."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def make_payload(rng: random.Random, index: int) -> Any:
    """A call payload of one of six kinds (by ``index``), up to ~4 KB."""
    kind = index % 6
    if kind == 0:
        return rng.choice([0, -1, 7, 2**31, -(2**62), rng.getrandbits(200)])
    if kind == 1:
        return "".join(rng.choice("abcxyzé€😀 ") for _ in range(rng.randint(0, 300)))
    if kind == 2:
        return rng.randbytes(rng.randint(0, 4096))
    if kind == 3:
        return [rng.randint(-1000, 1000), "s", b"b", [1.5, None, True], {"k": [1, 2]}]
    if kind == 4:
        return {f"key{j}": [j, str(j), {"n": j}] for j in range(rng.randint(0, 40))}
    return [{"id": j, "tags": ["x"] * (j % 4), "blob": rng.randbytes(32)}
            for j in range(rng.randint(1, 60))]


def percentile(values: List[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of the sorted ``values`` (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def print_figures(title: str, figures: Dict[str, Any]) -> None:
    """Print ``title`` and one ``name: value`` line per figure (flushed)."""
    print(f"== {title}")
    for name, value in figures.items():
        print(f"{name}: {value}")
    sys.stdout.flush()


def load_average() -> str:
    """The 1-minute load average, as text (other work on the machine skews figures)."""
    return f"{os.getloadavg()[0]:.2f}"
