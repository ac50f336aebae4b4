#!/usr/bin/env python3
"""Soak: what an idle connection costs a server, and that idle ones still answer.

    .venv/bin/python benchmarks/soak/idle.py                       # 10,000 connections
    .venv/bin/python benchmarks/soak/idle.py --connections 2000 --trace

A server (:mod:`soakserver`) runs in a child process; both processes raise
their open-file limit to the hard one (if that allows fewer connections
than asked, the script says so and opens what it may). The clients are raw
sockets in this process that do PB's handshake by hand (read the offer,
send the dialect choice ``pb`` and ``['version', 6]``, read the version):
a syncpb client connection would cost a thread and a pipe each.

Printed: the server's RSS before, at 25/50/75/100% of the connections and
once the handshake timers have run (``--settle`` seconds later), the RSS
per connection (KiB, from the settled figure; target: at most 20 KiB), that
the server counts them all, and that a random ``--sample`` of them answers
a call (a raw ``ping`` with a token of its own) after all were opened.
``--trace`` repeats the opening with ``--trace-connections`` connections
under tracemalloc in the server and prints where the memory went.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (ServerProcess, load_average, mib, print_figures,  # noqa: E402
                    raise_nofile)

import syncpb  # noqa: E402
from syncpb import banana  # noqa: E402
from syncpb.transport import parse_address  # noqa: E402

#: The client's dialect choice ('pb') and ['version', 6], in the pb dialect.
CHOICE_AND_VERSION = b"\x02\x82pb\x02\x80\x13\x87\x06\x81"
#: Longest wait for any one read.
WAIT = 30.0
#: File descriptors kept back for everything else in a process.
SPARE_FDS = 200


class RawClient:
    """A PB client connection on a plain socket: handshake and raw calls."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = banana.Decoder(vocab=True)
        self.messages: List[Any] = []
        self.next_id = 0

    def read(self) -> Any:
        """The next decoded message (raises ConnectionError at the end)."""
        while not self.messages:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.messages.extend(self.decoder.feed(data))
        return self.messages.pop(0)

    def handshake(self) -> None:
        offer = self.read()
        if offer != [b"pb", b"none"]:
            raise ConnectionError(f"unexpected offer {offer!r}")
        self.sock.sendall(CHOICE_AND_VERSION)
        version = self.read()
        if version != [b"version", 6]:
            raise ConnectionError(f"unexpected version {version!r}")

    def ping(self, token: bytes) -> Any:
        """``root.ping(token)``; the answer's value (or the whole reply when
        it is not an answer)."""
        self.next_id += 1
        request = self.next_id
        self.sock.sendall(banana.encode([b"message", request, b"root", b"ping", 1,
                                         [b"tuple", token], [b"dictionary"]]))
        while True:
            reply = self.read()
            if reply[:1] == [b"decref"]:
                continue
            if reply[:2] == [b"answer", request] and len(reply) == 3:
                return reply[2]
            return reply

    def close(self) -> None:
        self.sock.close()


def _open_all(address: str, count: int, marks: Dict[int, Any],
              at_mark: Any) -> Tuple[List[RawClient], int]:
    """Open ``count`` handshaken connections; ``at_mark(n)`` at each count
    in ``marks``. Returns the connections and how many failed."""
    target = parse_address(address)
    clients: List[RawClient] = []
    failed = 0
    for n in range(1, count + 1):
        try:
            client = RawClient(target.host, target.port)
            client.handshake()
            clients.append(client)
        except OSError:
            failed += 1
        if n in marks:
            at_mark(n)
    return clients, failed


def _wait_sessions(server: ServerProcess, control: syncpb.Connection, want: int,
                   timeout: float) -> int:
    """Poll the server until it counts ``want`` connections (the
    ``control`` connection not included) or ``timeout``; the last count."""
    end = time.monotonic() + timeout
    while True:
        count = int(server.stats(conn=control)["sessions"]) - 1
        if count == want or time.monotonic() >= end:
            return count
        time.sleep(0.1)


def run(connections: int = 10000, sample: int = 100, settle: float = 11.0,
        seed: int = 1) -> Dict[str, Any]:
    """The idle soak; returns its figures (see the module docstring)."""
    soft, hard = raise_nofile()
    allowed = max(1, min(connections, soft - SPARE_FDS, hard - SPARE_FDS))
    figures: Dict[str, Any] = {"asked": connections, "connections": allowed,
                               "nofile": (soft, hard)}
    with tempfile.TemporaryDirectory(prefix="soak") as workdir:
        server = ServerProcess("tcp", workdir)
        # The control connection is opened first: a syncpb client cannot use
        # a file descriptor of 1024 or above (it waits in select()).
        control = server.connect()
        clients: List[RawClient] = []
        try:
            warm, _ = _open_all(server.address, min(50, allowed), {}, None)
            warm[0].ping(b"warm-up")
            for client in warm:
                client.close()
            _wait_sessions(server, control, 0, 30)
            rss: Dict[str, int] = {"0%": server.rss_kib()}
            marks = {max(1, allowed * q // 4): f"{25 * q}%" for q in (1, 2, 3, 4)}
            started = time.perf_counter()
            clients, failed = _open_all(server.address, allowed, marks,
                                        lambda n: rss.__setitem__(marks[n], server.rss_kib()))
            figures["open_seconds"] = time.perf_counter() - started
            figures["open_failed"] = failed
            time.sleep(settle)  # the handshake-timeout timers of the last connections run
            rss["settled"] = server.rss_kib()
            figures["server_counts"] = _wait_sessions(server, control, len(clients), 30)
            rng = random.Random(seed)
            picked = rng.sample(clients, min(sample, len(clients)))
            answered = 0
            for k, client in enumerate(picked):
                token = f"idle-{k}-{rng.getrandbits(32)}".encode()
                try:
                    answered += client.ping(token) == token
                except OSError:
                    pass
            figures["sampled"], figures["answered"] = len(picked), answered
            for client in clients:
                client.close()
            clients = []
            figures["left_after_close"] = _wait_sessions(server, control, 0, 60)
            rss["after close"] = server.rss_kib()
        finally:
            for client in clients:
                client.close()
            control.close()
            server.stop()
    opened = max(1, allowed - figures["open_failed"])
    figures["rss_kib"] = rss
    figures["kib_per_connection"] = (rss["settled"] - rss["0%"]) / opened
    figures["kib_per_connection_25_to_100"] = (
        (rss["100%"] - rss["25%"]) / max(1, opened - opened // 4))
    return figures


def trace(connections: int = 2000, limit: int = 12, settle: float = 11.0) -> Dict[str, Any]:
    """Open ``connections`` under tracemalloc in the server and wait
    ``settle`` seconds (the handshake timers run): the traced bytes per
    connection, the top allocating lines (with their callers) and files."""
    soft, _ = raise_nofile()
    connections = max(1, min(connections, soft - SPARE_FDS))
    with tempfile.TemporaryDirectory(prefix="soak") as workdir:
        server = ServerProcess("tcp", workdir)
        control = server.connect()
        clients: List[RawClient] = []
        try:
            control.root.call("trace_start", 8, timeout=60)
            clients, _ = _open_all(server.address, connections, {}, None)
            _wait_sessions(server, control, len(clients), 30)
            time.sleep(settle)
            lines = control.root.call("trace_top", limit, "traceback", timeout=120)
            files = control.root.call("trace_top", 1000, "filename", timeout=120)
        finally:
            for client in clients:
                client.close()
            control.close()
            server.stop()
    opened = max(1, len(clients))
    return {"connections": opened,
            "kib_per_connection": sum(size for _, size, _ in files) / 1024 / opened,
            "lines": list(lines), "files": list(files)[:limit]}


def _print_trace(result: Dict[str, Any]) -> None:
    n = result["connections"]
    print(f"== tracemalloc in the server, {n} idle connections (settled): "
          f"{result['kib_per_connection']:.1f} KiB traced per connection")
    print("-- by file (bytes per connection, blocks per connection):")
    for where, size, blocks in result["files"]:
        print(f"{size / n:8.0f} B {blocks / n:6.1f}  {where}")
    print("-- by allocating line and its callers (the line first):")
    for where, size, blocks in result["lines"]:
        print(f"{size / n:8.0f} B {blocks / n:6.1f}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--sample", type=int, default=100, help="connections asked to answer")
    parser.add_argument("--settle", type=float, default=11.0,
                        help="seconds after opening before the settled RSS (handshake timers)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trace", action="store_true", help="also a tracemalloc pass")
    parser.add_argument("--trace-connections", type=int, default=2000)
    options = parser.parse_args()
    print(f"load average at start: {load_average()}", flush=True)
    figures = run(options.connections, options.sample, options.settle, options.seed)
    rss = figures["rss_kib"]
    limit_note = ("" if figures["connections"] == figures["asked"] else
                  f" (asked {figures['asked']}; the file limit {figures['nofile']} allows this)")
    print_figures(f"{figures['connections']} idle connections{limit_note}", {
        "open file limit (soft, hard)": figures["nofile"],
        "opened in": f"{figures['open_seconds']:.1f} s",
        "failed to open": figures["open_failed"],
        "server counts": figures["server_counts"],
        **{f"server RSS {'' if key[0] in 'as' else 'at '}{key}": mib(value)
           for key, value in rss.items()},
        "server RSS per connection (settled - 0%)":
            f"{figures['kib_per_connection']:.1f} KiB (target <= 20 KiB)",
        "server RSS per connection (25% -> 100%)":
            f"{figures['kib_per_connection_25_to_100']:.1f} KiB",
        "sample answered": f"{figures['answered']} of {figures['sampled']} (must be all)",
        "connections left after close": figures["left_after_close"],
        "load average at end": load_average(),
    })
    if options.trace:
        _print_trace(trace(options.trace_connections, settle=options.settle))


if __name__ == "__main__":
    main()
