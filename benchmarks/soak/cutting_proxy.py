#!/usr/bin/env python3
"""Soak: connections cut at random points; every call ends cleanly.

    .venv/bin/python benchmarks/soak/cutting_proxy.py            # 10,000 calls over TCP
    .venv/bin/python benchmarks/soak/cutting_proxy.py --tls      # the same over TLS
    .venv/bin/python benchmarks/soak/cutting_proxy.py --calls 300 --clients 3

A server (:mod:`soakserver`, in a child process) sits behind a TCP proxy
(gevent, in a thread of this process) that cuts each connection at a random
byte count in each direction (uniform up to ``--cut-max`` bytes): it
forwards exactly that many bytes, then closes both sides, half the time
with a reset. ``--clients`` OS threads each make calls of
``echo(token, payload)`` through the proxy (half blocking proxy calls, half
``callRemote(...).result(...)``), reconnecting after each failed call,
until ``--calls`` calls were made. Each call must end in one of two ways:

* ok: it returned exactly ``(token, payload)``;
* failed: it raised a syncpb error (a ``SyncPBError`` subclass);

and never: wrong (another answer: must be 0), hung (no answer within
``--call-timeout``, far above any real latency: must be 0), other (an
exception that is not a syncpb error: must be 0). The server also checks
that no token arrived twice (must be 0) and that every cut connection ended
on its side too.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import tempfile
import threading
import time
from typing import Any, Dict, Optional, Set, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (ServerProcess, load_average, make_certs, make_payload,  # noqa: E402
                    print_figures, soak_connect)

import syncpb  # noqa: E402
from syncpb.transport import parse_address  # noqa: E402

#: Longest wait for the server to drop the cut connections after the run.
SETTLE = 30.0


class CuttingProxy:
    """A TCP proxy to ``upstream`` that cuts every connection at a random
    byte count per direction; its gevent hub runs in a thread of its own."""

    def __init__(self, upstream: Tuple[str, int], cut_max: int, seed: int) -> None:
        self.upstream = upstream
        self.cut_max = cut_max
        self.rng = random.Random(seed)
        self.connections = 0
        self.cuts = 0
        self.resets = 0
        self.open: Dict[int, Tuple[Any, Any]] = {}  # proxied connections not ended yet
        self._changed = threading.Condition()  # notified when one of them ends
        self._handlers: Set[Any] = set()
        self.port = 0
        self._started = threading.Event()
        self._hub: Any = None
        self._stopping: Any = None
        self._thread = threading.Thread(target=self._serve, name="cutting-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("proxy did not start")

    def _serve(self) -> None:
        import gevent
        import gevent.event
        from gevent.server import StreamServer
        self._hub = gevent.get_hub()
        self._stopping = gevent.event.Event()
        server = StreamServer(("127.0.0.1", 0), self._handle, backlog=512)
        server.start()
        self.port = server.server_port
        self._started.set()
        self._stopping.wait()
        server.close()
        for pair in list(self.open.values()):  # end what is still open
            for sock in pair:
                sock.close()
        # gevent closes a socket others wait on once they were woken: let
        # the handlers (and so the hub) run until they are done.
        gevent.joinall(list(self._handlers), timeout=10)

    def stop(self) -> None:
        """Stop accepting and end every proxied connection."""
        if self._hub is not None:
            self._hub.loop.run_callback_threadsafe(self._stopping.set)
        self._thread.join(30)

    def wait_closed(self, timeout: float) -> int:
        """Wait until every proxied connection has ended (both ends closed)
        or ``timeout``; return how many are still open."""
        end = time.monotonic() + timeout
        with self._changed:
            while self.open and time.monotonic() < end:
                self._changed.wait(end - time.monotonic())
            return len(self.open)

    def _handle(self, client: Any, _peer: Any) -> None:
        import gevent.socket
        from greenlet import getcurrent
        self.connections += 1
        me = getcurrent()
        self._handlers.add(me)
        key = id(client)
        try:
            server = gevent.socket.create_connection(self.upstream, timeout=10)
        except OSError:
            self._handlers.discard(me)
            return
        with self._changed:
            self.open[key] = (client, server)
        try:
            self._forward(client, server)
        finally:
            client.close()
            server.close()
            with self._changed:
                self.open.pop(key, None)
                self._changed.notify_all()
            self._handlers.discard(me)

    def _forward(self, client: Any, server: Any) -> None:
        import gevent
        client.settimeout(None)
        server.settimeout(None)
        budgets = (self.rng.randint(0, self.cut_max), self.rng.randint(0, self.cut_max))
        reset = self.rng.random() < 0.5
        pumps = [gevent.spawn(self._pump, client, server, budgets[0]),
                 gevent.spawn(self._pump, server, client, budgets[1])]
        finished = gevent.wait(pumps, count=1)
        cut = any(p.value == "cut" for p in finished)
        if cut:
            self.cuts += 1
            self.resets += reset
        for sock in (client, server):
            if cut and reset:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    b"\x01\x00\x00\x00\x00\x00\x00\x00")
                except OSError:
                    pass
            sock.close()
        gevent.joinall(pumps, timeout=10)

    @staticmethod
    def _pump(source: Any, target: Any, budget: int) -> str:
        """Forward until ``budget`` bytes went through ("cut") or the end."""
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    return "end"
                if sent + len(data) >= budget:
                    target.sendall(data[:budget - sent])
                    return "cut"
                target.sendall(data)
                sent += len(data)
        except OSError:
            return "end"


class _Tally:
    """Counts shared by the client threads."""

    KEYS = ("ok", "failed", "wrong", "hung", "other", "connects", "connect_failed")

    def __init__(self, calls: int) -> None:
        self.lock = threading.Lock()
        self.counts = {key: 0 for key in self.KEYS}
        self.errors: Dict[str, int] = {}
        self.calls = calls
        self.next_call = 0
        self.progress: Dict[int, float] = {}

    def add(self, key: str, error: Optional[BaseException] = None) -> None:
        with self.lock:
            self.counts[key] += 1
            if error is not None:
                name = type(error).__name__
                self.errors[name] = self.errors.get(name, 0) + 1

    def take(self) -> int:
        """The next call's number, or -1 when all were made."""
        with self.lock:
            number = self.next_call
            if number >= self.calls:
                return -1
            self.next_call += 1
            return number


def _client(index: int, address: str, certdir: Optional[str], tally: _Tally,
            call_timeout: float, end: float) -> None:
    """One client thread: connect, call until a call fails, reconnect."""
    rng = random.Random(index)
    conn: Optional[syncpb.Connection] = None
    try:
        while time.monotonic() < end:
            if conn is None or conn.closed:
                try:
                    conn = soak_connect(address, certdir, timeout=10.0)
                    tally.add("connects")
                except syncpb.SyncPBError as exc:
                    tally.add("connect_failed", exc)
                    continue
            number = tally.take()
            if number < 0:
                return
            token = f"{index}.{number}"
            payload = make_payload(rng, number)
            try:
                if number % 2:
                    answer = conn.root.call("echo", token, payload, timeout=call_timeout)
                else:
                    answer = conn.root.callRemote("echo", token, payload).result(
                        timeout=call_timeout)
            except syncpb.CallTimeout as exc:
                tally.add("hung", exc)
            except syncpb.SyncPBError as exc:
                tally.add("failed", exc)
            except Exception as exc:  # must not happen: counted and shown
                tally.add("other", exc)
            else:
                tally.add("ok" if answer == (token, payload) else "wrong")
                continue
            conn.close()
            conn = None
    finally:
        if conn is not None:
            conn.close()


def run(calls: int = 10000, clients: int = 4, tls: bool = False, cut_max: int = 20000,
        call_timeout: float = 10.0, deadline: float = 600.0, seed: int = 1,
        certdir: Optional[str] = None) -> Dict[str, Any]:
    """The cutting-proxy soak; returns its figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="soak") as workdir:
        if tls and certdir is None:
            certdir = make_certs(os.path.join(workdir, "certs"))
        server = ServerProcess("tls" if tls else "tcp", workdir, certdir,
                               extra=["--track-tokens"])
        proxy: Optional[CuttingProxy] = None
        try:
            target = parse_address(server.address)
            proxy = CuttingProxy((target.host, target.port), cut_max, seed)
            address = f"{target.scheme}://127.0.0.1:{proxy.port}"
            tally = _Tally(calls)
            end = time.monotonic() + deadline
            started = time.perf_counter()
            threads = [threading.Thread(target=_client, daemon=True,
                                        args=(i, address, certdir, tally, call_timeout, end))
                       for i in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(max(0.0, end - time.monotonic()) + call_timeout + 5)
            stuck = sum(thread.is_alive() for thread in threads)
            seconds = time.perf_counter() - started
            # a connection a client left open stays open; the others end
            # as soon as the proxy has seen both of their ends close
            open_after = proxy.wait_closed(10.0)
            proxy.stop()
            proxy_figures = {"connections": proxy.connections, "cuts": proxy.cuts,
                             "resets": proxy.resets}
            proxy = None
            settle = time.monotonic() + SETTLE
            stats = server.stats()
            while stats["sessions"] > 1 and time.monotonic() < settle:
                time.sleep(0.1)
                stats = server.stats()
        finally:
            if proxy is not None:
                proxy.stop()
            server.stop()
    counts = dict(tally.counts)
    return {"calls": calls, "made": tally.next_call, **counts, "stuck_threads": stuck,
            "open_after_clients": open_after,
            "errors": dict(tally.errors), "seconds": seconds, "proxy": proxy_figures,
            "duplicates": stats["duplicates"], "server_tokens": stats["tokens"],
            "server_sessions_left": stats["sessions"] - 1,
            "server_logged_errors": stats["logged_errors"],
            "server_first_errors": stats["first_errors"],
            "server_sessions": stats["session_details"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument("--tls", action="store_true", help="TLS through the proxy")
    parser.add_argument("--cut-max", type=int, default=20000,
                        help="largest byte count a direction is cut at")
    parser.add_argument("--call-timeout", type=float, default=10.0,
                        help="a call with no answer by then counts as hung")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds, whole run")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    print(f"load average at start: {load_average()}", flush=True)
    figures = run(options.calls, options.clients, options.tls, options.cut_max,
                  options.call_timeout, options.deadline, options.seed)
    print_figures(f"{options.calls:,} calls through a cutting proxy "
                  f"({'TLS' if options.tls else 'TCP'}, {options.clients} clients)", {
                      "calls made": f"{figures['made']:,}",
                      "ok": f"{figures['ok']:,}",
                      "failed with a syncpb error": f"{figures['failed']:,}",
                      "wrong (must be 0)": figures["wrong"],
                      "hung (must be 0)": figures["hung"],
                      "other exceptions (must be 0)": figures["other"],
                      "client threads still running (must be 0)": figures["stuck_threads"],
                      "connections the clients left open (must be 0)":
                          figures["open_after_clients"],
                      "errors by type": figures["errors"] or "none",
                      "connections made / failed to connect":
                          f"{figures['connects']} / {figures['connect_failed']}",
                      "proxy connections / cuts / of which resets":
                          "{connections} / {cuts} / {resets}".format(**figures["proxy"]),
                      "tokens the server ran twice (must be 0)": figures["duplicates"],
                      "server connections left (must be 0)": figures["server_sessions_left"],
                      "server connections (when some are left)": "\n  " + "\n  ".join(
                          figures["server_sessions"]) if figures["server_sessions_left"] else "-",
                      "errors the server logged (should be 0)":
                          f"{figures['server_logged_errors']} "
                          f"{figures['server_first_errors'] or ''}",
                      "seconds": f"{figures['seconds']:.1f}",
                      "load average at end": load_average(),
                  })


if __name__ == "__main__":
    main()
