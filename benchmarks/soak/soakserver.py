"""The soak scripts' server: a ``syncpb.Server`` run in a child process.

Started by :class:`common.ServerProcess` (never on its own): it listens on
one address (``--listen tcp|unix|tls``), prints ``ADDR <address>``, serves
from a background thread and stops when its stdin closes (the parent closed
it or died). Its root, :class:`SoakRoot`, has what the scripts call: an
echo, reference and cache traffic, a callback into the caller, a method
that blocks until the process is killed, and ``stats`` (the server's object
tables, connections, threads, greenlets, RSS), the only way the parent
sees inside the server.

The copyable classes (:class:`SoakCounter` and its :class:`RemoteSoakCounter`)
live here and are registered on import, so the client side imports this
module to receive them (the tag is ``soakserver.SoakCounter``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tracemalloc
import weakref
from typing import Any, Dict, List, Optional, Tuple

import syncpb

__all__ = ["SoakRoot", "SoakRef", "SoakCounter", "RemoteSoakCounter", "main"]

#: The server being run (set by :func:`main`), for ``stats``.
SERVER: Optional[syncpb.Server] = None
#: Longest a server-side callback into a client may wait.
CALLBACK_TIMEOUT = 60.0


class SoakRef(syncpb.Referenceable):
    """A fresh object handed out by reference (``new_ref``)."""

    live: "weakref.WeakSet[SoakRef]" = weakref.WeakSet()

    def __init__(self, value: int) -> None:
        self.value = value
        SoakRef.live.add(self)

    def remote_value(self) -> int:
        return self.value


class SoakCounter(syncpb.Cacheable):
    """A cached counter: holders are told each new value."""

    live: "weakref.WeakSet[SoakCounter]" = weakref.WeakSet()

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.observers = syncpb.ObserverList()
        SoakCounter.live.add(self)

    def getStateToCacheAndObserveFor(self, perspective: Any,  # noqa: N802
                                     observer: Any) -> Dict[str, Any]:
        self.observers.add(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective: Any, observer: Any) -> None:  # noqa: N802
        self.observers.discard(observer)

    def bump(self) -> int:
        self.value += 1
        self.observers.notify("setValue", self.value)
        return self.value


class RemoteSoakCounter(syncpb.RemoteCache):
    """The holder's copy of a :class:`SoakCounter`."""

    value: int = 0

    def observe_setValue(self, value: int) -> None:  # noqa: N802
        self.value = value


syncpb.setUnjellyableForClass(SoakCounter, RemoteSoakCounter)


class _CountErrors(logging.Handler):
    """Counts the records of level ERROR and above that syncpb logs (an
    ``internal error`` on a connection is one); they still go to stderr."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(record.getMessage()[:200])


ERRORS = _CountErrors()


def _threads() -> int:
    """OS threads of this process."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def _greenlets() -> int:
    """Greenlet objects alive (a scan of the collector's objects)."""
    import greenlet
    return sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet.greenlet))


class SoakRoot(syncpb.Root):
    """The soak server's root (see the module docstring)."""

    def __init__(self, track_tokens: bool = False) -> None:
        import gevent.event
        self.track_tokens = track_tokens
        self.seen: set = set()
        self.duplicates = 0
        self.counter = SoakCounter()
        self.blocked = 0
        self._arrivals = gevent.event.Event()
        self._snapshot: Any = None

    # -- calls

    def remote_echo(self, token: Any, payload: Any) -> Tuple[Any, Any]:
        if self.track_tokens:
            if token in self.seen:
                self.duplicates += 1
            self.seen.add(token)
        return token, payload

    def remote_ping(self, value: Any) -> Any:
        return value

    # -- references and caches

    def remote_new_ref(self, value: int) -> SoakRef:
        return SoakRef(value)

    def remote_take_ref(self, ref: Any, value: int) -> int:
        return value  # the proxy is dropped here: the client hears a decref

    def remote_shared_counter(self) -> SoakCounter:
        return self.counter

    def remote_bump(self) -> int:
        return self.counter.bump()

    def remote_new_counter(self, value: int) -> SoakCounter:
        return SoakCounter(value)

    # -- callbacks and blocking

    def remote_call_back(self, ref: Any, token: Any) -> Tuple[str, Any, Any]:
        """Call ``ref.ping(token)`` and wait for it before answering."""
        return "cb", token, ref.call("ping", token, timeout=CALLBACK_TIMEOUT)

    def remote_block(self) -> None:
        """Wait for an event that never fires (until the process dies)."""
        import gevent.event
        self.blocked += 1
        self._arrivals.set()
        gevent.event.Event().wait()

    def remote_wait_blocked(self, count: int, timeout: float) -> int:
        """Wait until ``count`` calls of ``block`` arrived (or ``timeout``);
        return how many did."""
        import gevent
        with gevent.Timeout(timeout, False):
            while self.blocked < count:
                self._arrivals.clear()
                self._arrivals.wait()
        return self.blocked

    # -- inspection

    def remote_stats(self, full: bool = False) -> Dict[str, Any]:
        """The server's tables summed over its connections, and the process."""
        sessions = list(SERVER._sessions) if SERVER is not None else []
        brokers = [session.broker for session in sessions]
        stats: Dict[str, Any] = {
            "sessions": len(sessions),
            "exports": sum(b.export_count for b in brokers),
            "imports": sum(b.import_count for b in brokers),
            "caches": sum(b.cache_count for b in brokers),
            "cache_imports": sum(b.cache_import_count for b in brokers),
            "waiting": sum(b.waiting_count for b in brokers),
            "pending": sum(len(session._pending) for session in sessions),
            "live_refs": len(SoakRef.live),
            "live_counters": len(SoakCounter.live),
            "observers": len(self.counter.observers),
            "duplicates": self.duplicates,
            "tokens": len(self.seen),
            "logged_errors": ERRORS.count,
            "first_errors": list(ERRORS.first),
            "threads": _threads(),
            "rss_kib": _rss_kib(),
        }
        if full:
            gc.collect()
            stats["greenlets"] = _greenlets()
            stats["session_details"] = [_describe(session) for session in sessions]
        return stats

    def remote_gc(self) -> int:
        return gc.collect()

    def remote_trace_start(self, frames: int = 4) -> bool:
        """Start tracemalloc and take the baseline snapshot."""
        gc.collect()
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
        self._snapshot = tracemalloc.take_snapshot()
        return True

    def remote_trace_top(self, limit: int = 15, key: str = "lineno") -> List[Tuple[str, int, int]]:
        """The allocations that grew most since :meth:`remote_trace_start`,
        grouped by ``key`` (``lineno``, ``filename``, ``traceback``):
        ``(where, bytes, blocks)``, largest first; ``where`` names the
        allocating line first, then its callers."""
        gc.collect()
        now = tracemalloc.take_snapshot()
        skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
        diff = now.filter_traces(skip).compare_to(self._snapshot.filter_traces(skip), key)
        rows = []
        for stat in diff[:limit]:
            where = " <- ".join(f"{os.path.relpath(frame.filename)}:{frame.lineno}"
                                for frame in reversed(stat.traceback))  # site first
            rows.append((where, stat.size_diff, stat.count_diff))
        return rows


def _describe(session: Any) -> str:
    """One connection's state, and where its reader greenlet waits."""
    import traceback
    reader = getattr(session, "_reader", None)
    frame = getattr(reader, "gr_frame", None)
    where = "" if frame is None else " | ".join(
        line.strip().replace("\n", " ") for line in traceback.format_stack(frame)[-4:])
    return (f"{session.name}: closed={session.closed} lost={session._lost_done} "
            f"ready={session.ready.called} stream={type(session.sock).__name__} "
            f"queue={len(session._queue)} draining={getattr(session, '_draining', None)} "
            f"reader={'none' if reader is None else 'dead' if reader.dead else 'alive'} "
            f"{where}")


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _listen(server: syncpb.Server, transport: str, workdir: str, certdir: str) -> str:
    if transport == "tcp":
        return server.listen("tcp://127.0.0.1:0")
    if transport == "unix":
        return server.listen(f"unix://{os.path.join(workdir, 'soak.sock')}")
    from syncpb import tls
    context = tls.server_context(cert=os.path.join(certdir, "server.pem"),
                                 key=os.path.join(certdir, "server.key"))
    if transport == "tls":
        return server.listen("tls://127.0.0.1:0", tls=context)
    raise ValueError(f"unknown transport {transport!r}")


def main(argv: List[str]) -> None:
    """Serve until stdin closes (see the module docstring)."""
    global SERVER
    parser = argparse.ArgumentParser(prog="soakserver")
    parser.add_argument("--listen", choices=["tcp", "unix", "tls"], default="tcp")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--certdir", required=True)
    parser.add_argument("--nofile", type=int, default=None)
    parser.add_argument("--track-tokens", action="store_true")
    options = parser.parse_args(argv)
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if options.nofile is None else min(options.nofile, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    logging.basicConfig(level=logging.WARNING, format="soakserver: %(message)s")
    logging.getLogger("syncpb").addHandler(ERRORS)
    SERVER = syncpb.Server(SoakRoot(track_tokens=options.track_tokens))
    address = _listen(SERVER, options.listen, options.workdir, options.certdir)
    SERVER.start()
    print(f"ADDR {address}", flush=True)
    try:
        sys.stdin.buffer.read()  # until the parent closes it (or dies)
    finally:
        SERVER.stop(timeout=10)
        sys.stdout.flush()
        os._exit(0)
