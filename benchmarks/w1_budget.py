"""Where does a W1 call's time go, side by side with the raw floor?

A benchmark script, not a test. ``run.py``'s W1 reports calls per second;
this script splits one sequential small call into the CPU each process
spends on it (user and system time per call, from ``/proc`` and
``getrusage``), for three servers measured in the same run, each with
server and client pinned to one CPU (the first this process may use: CPU 0
on most machines) as in ``run.py``:

* ``syncpb``: ``benchmarks/peer.py server syncpb`` (gevent), client
  ``root.add(i, 1)`` on ``syncpb.connect``;
* ``raw``: ``benchmarks/peer.py server raw`` (gevent, echoes 32-byte
  frames: the floor ``run.py`` measures W1 against), blocking client;
* ``raw-threads``: the same echo with one OS thread per connection (the
  floor before 2026-12-06; it shows what gevent's hub costs).

With ``--bare``, two more kinds show how far work on the sessions alone
could go. Their clients drive a sans-IO :class:`~syncpb.broker.Broker` on a
plain socket (encode the call, ``sendall``, ``recv_into``, decode the
answer: no session, no locks, no leader, no background thread), which is
the least any blocking client built on the broker must do:

* ``bare-client``: that client against the ``syncpb`` server;
* ``bare``: that client against a server that does the same, one greenlet
  per connection reading a gevent socket into a ``Broker`` and writing its
  answers (no session, no batching, no thread pool).

``bare`` is a ceiling, not a server anyone should run: it is what W1 would
reach if both sessions cost nothing. Whatever separates it from ``raw`` is
the broker and the codec.

With ``--thin``, one more kind shows the ceiling of any design that keeps
Python between the socket and the compiled codec:

* ``thin``: both sides use a Broker only for the handshake, then run the
  least Python a PB call can take: the client writes the call's bytes with
  the compiled Writer (its arguments with ``write_items``) and reads the
  answer with the compiled Reader; the server reads each call with the
  Reader, looks up ``remote_<name>``, calls it and writes the small-int
  answer's tokens. No limits, no reference checks, no events, no errors:
  it only serves this benchmark's calls.

Whatever separates ``bare`` from ``thin`` is the broker's Python (its
state, checks and events); whatever separates ``thin`` from ``raw`` is the
codec and the few Python lines left.

Each figure is the median of ``--rounds`` rounds of ``--calls`` calls
(bounded by ``--calls``; kinds interleaved). Unlike ``run.py``'s client
loops, these loops do nothing besides the call, so the absolute rates are
higher than ``run.py``'s.

    python benchmarks/w1_budget.py [--calls 30000] [--rounds 3] [--bare] [--thin]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("syncpb", "raw", "raw-threads")
BARE_KINDS = ("bare-client", "bare")
THIN_KINDS = ("thin",)
FRAME = struct.pack("!I", 32) + b"x" * 32
TICK = os.sysconf("SC_CLK_TCK")
#: Where both processes run: the first CPU this process may use.
CPU = min(os.sched_getaffinity(0))


def serve_threads() -> None:
    """The ``raw-threads`` server: echo every frame, a thread per connection."""
    sys.path.insert(0, HERE)
    from peers.raw_peer import _handle

    lsock = socket.create_server(("127.0.0.1", 0))
    print(f"ADDR tcp://127.0.0.1:{lsock.getsockname()[1]}", flush=True)
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


def serve_gevent(loop: Callable[[Any, Any, Any, memoryview], None]) -> None:
    """Serve on a gevent socket: for each connection, one greenlet runs
    ``loop(conn, root, broker, view)`` with a fresh Broker (whose root has
    ``remote_add``) and a 1 MiB read area."""
    import gevent
    import gevent.socket
    from syncpb.broker import Broker
    from syncpb.flavors import Root

    class Calculator(Root):
        def remote_add(self, a: int, b: int) -> int:
            return a + b

    def handle(conn: Any) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        root = Calculator()
        loop(conn, root, Broker(root=root), memoryview(bytearray(1 << 20)))
        conn.close()

    lsock = gevent.socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    print(f"ADDR tcp://127.0.0.1:{lsock.getsockname()[1]}", flush=True)
    while True:
        conn, _ = lsock.accept()
        gevent.spawn(handle, conn)


def bare_loop(conn: Any, root: Any, broker: Any, view: memoryview) -> None:
    """The ``bare`` server's connection: a Broker on a gevent socket, no session."""
    from syncpb.broker import CallReceived

    while True:
        out = broker.pieces_to_send()
        if out:
            conn.sendall(b"".join(out))
        count = conn.recv_into(view)
        if not count:
            return
        for event in broker.receive_data(view[:count].tobytes()):
            if type(event) is CallReceived:
                broker.answer(event.request_id, event.method(*event.args))


def handshake(sock: Any, broker: Any, view: memoryview) -> None:
    """Run ``broker``'s dialect handshake on ``sock``, answering any call it
    delivers meanwhile."""
    from syncpb.broker import CallReceived, Ready

    ready = False
    while not ready:
        out = broker.data_to_send()
        if out:
            sock.sendall(out)
        count = sock.recv_into(view)
        if not count:
            raise ConnectionError("peer closed during the handshake")
        events = broker.receive_data(view[:count].tobytes())
        for event in events:
            if type(event) is CallReceived:
                broker.answer(event.request_id, event.method(*event.args))
        ready = any(type(event) is Ready for event in events)
    out = broker.data_to_send()
    if out:
        sock.sendall(out)


def thin_loop(conn: Any, root: Any, broker: Any, view: memoryview) -> None:
    """The ``thin`` server's connection: the broker for the handshake, then
    only the compiled Reader and Writer and a few Python lines per call."""
    handshake(conn, broker, view)
    reader, int_token, security = broker._reader, broker._writer.int_token, broker.security
    message_head, answer_head = broker._message_head, broker._answer_head
    start = len(message_head)
    while True:
        count = conn.recv_into(view)
        if not count:
            return
        data = view[:count].tobytes()  # one whole call per read (loopback, sequential)
        if not data.startswith(message_head):
            raise SystemExit(f"thin server: not a call: {data[:40]!r}")
        reader.restart(data, start, security, None)
        request_id, _oid, name, _answer_required = reader.raw_fields(4)
        args = reader.jelly()
        reader.jelly()  # (keyword arguments: none)
        result = getattr(root, "remote_" + name.decode())(*args)
        conn.sendall(answer_head + int_token(request_id) + int_token(result))


def start_server(kind: str) -> Tuple[subprocess.Popen, str]:
    if kind == "raw-threads":
        cmd = [sys.executable, os.path.abspath(__file__), "--serve-threads"]
    elif kind == "bare":
        cmd = [sys.executable, os.path.abspath(__file__), "--serve-bare"]
    elif kind == "thin":
        cmd = [sys.executable, os.path.abspath(__file__), "--serve-thin"]
    else:
        cmd = [sys.executable, os.path.join(HERE, "peer.py"), "server", kind, "--lifetime", "300"]
    proc = subprocess.Popen(["taskset", "-c", str(CPU), *cmd], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "ADDR":
        proc.kill()
        raise SystemExit(f"{kind} server did not start: {line!r}")
    return proc, line[1]


def connect_tcp(addr: str) -> socket.socket:
    """A blocking TCP connection to ``tcp://host:port``, Nagle off."""
    host, _, port = addr[len("tcp://"):].rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def raw_caller(addr: str) -> Tuple[Callable[[], None], Callable[[], None]]:
    sock = connect_tcp(addr)
    buf = bytearray(len(FRAME))
    view = memoryview(buf)

    def call() -> None:
        sock.sendall(FRAME)
        got = 0
        while got < len(FRAME):
            n = sock.recv_into(view[got:])
            if not n:
                raise ConnectionError("raw server closed")
            got += n
    return call, sock.close


def syncpb_caller(addr: str) -> Tuple[Callable[[], None], Callable[[], None]]:
    import syncpb

    conn = syncpb.connect(addr, timeout=10)
    add = conn.root.add
    counter = [0]

    def call() -> None:
        counter[0] += 1
        if add(counter[0], 1) != counter[0] + 1:
            raise AssertionError("wrong answer")
    return call, conn.close


def broker_client(addr: str) -> Tuple[Any, Any, memoryview, Callable[[], None]]:
    """A Broker on a plain socket, past the handshake: the socket, the
    broker, its read area and ``call()``, which calls ``add(n, 1)`` through
    the broker (n counting up) and checks the answer."""
    from syncpb.broker import AnswerReceived, Broker

    sock = connect_tcp(addr)
    broker = Broker(is_client=True)
    view = memoryview(bytearray(1 << 20))
    handshake(sock, broker, view)
    counter = [0]

    def call() -> None:
        counter[0] += 1
        n = counter[0]
        broker.call(b"root", "add", (n, 1), {})
        sock.sendall(broker.data_to_send())
        events: List[Any] = []
        while not events:  # (an answer may come in two reads)
            count = sock.recv_into(view)
            if not count:
                raise ConnectionError("server closed")
            events = broker.receive_data(view[:count].tobytes())
        (event,) = events
        if type(event) is not AnswerReceived or event.value != n + 1:
            raise AssertionError(f"wrong answer: {event!r}")
    return sock, broker, view, call


def bare_caller(addr: str) -> Tuple[Callable[[], None], Callable[[], None]]:
    sock, _, _, call = broker_client(addr)
    return call, sock.close


def thin_caller(addr: str) -> Tuple[Callable[[], None], Callable[[], None]]:
    sock, broker, view, broker_call = broker_client(addr)
    # One call through the broker takes in what the server sent after the
    # handshake (its version message), so the thin loop sees only answers.
    broker_call()
    reader, writer, security = broker._reader, broker._writer, broker.security
    int_token, message_head, answer_head = writer.int_token, broker._message_head, \
        broker._answer_head
    target = writer.word(b"root") + writer.word(b"add") + b"\x01\x81"  # answer required
    empty_kwargs, start = broker._empty_kwargs, len(answer_head)
    counter = [0]

    def call() -> None:
        counter[0] += 1
        body: List[bytes] = []
        writer.write_items(b"tuple", (counter[0], 1), body)
        sock.sendall(message_head + int_token(counter[0]) + target + b"".join(body)
                     + empty_kwargs)
        data = view[:sock.recv_into(view)].tobytes()  # one whole answer per read
        reader.restart(data, start, security, None)
        if not data.startswith(answer_head) or reader.raw() != counter[0] \
                or reader.jelly() != counter[0] + 1:
            raise AssertionError(f"wrong answer: {data!r}")
    return call, sock.close


def proc_cpu(pid: int) -> Tuple[float, float]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def one_round(kind: str, calls: int) -> Dict[str, float]:
    server = {"bare-client": "syncpb"}.get(kind, kind)
    proc, addr = start_server(server)
    try:
        caller = {"syncpb": syncpb_caller, "bare-client": bare_caller, "bare": bare_caller,
                  "thin": thin_caller}
        call, close = caller.get(kind, raw_caller)(addr)
        try:
            for _ in range(min(2000, calls)):  # warm up
                call()
            s0, c0 = proc_cpu(proc.pid), resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            for _ in range(calls):
                call()
            elapsed = time.perf_counter() - t0
            s1, c1 = proc_cpu(proc.pid), resource.getrusage(resource.RUSAGE_SELF)
        finally:
            close()
    finally:
        proc.kill()
        proc.wait()
    per = 1e6 / calls
    return {"calls/s": calls / elapsed, "wall": elapsed * per,
            "client user": (c1.ru_utime - c0.ru_utime) * per,
            "client sys": (c1.ru_stime - c0.ru_stime) * per,
            "server user": (s1[0] - s0[0]) * per, "server sys": (s1[1] - s0[1]) * per}


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=30000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bare", action="store_true",
                    help="also measure the broker-only kinds bare-client and bare")
    ap.add_argument("--thin", action="store_true",
                    help="also measure the thinnest Python loop on the compiled codec (thin)")
    ap.add_argument("--serve-threads", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve-thin", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_threads or args.serve_bare or args.serve_thin:
        signal.alarm(300)  # a server its driver lost does not linger
    if args.serve_threads:
        serve_threads()
        return 0
    if args.serve_bare or args.serve_thin:
        serve_gevent(thin_loop if args.serve_thin else bare_loop)
        return 0
    os.sched_setaffinity(0, {CPU})
    kinds = (KINDS[:1] + (BARE_KINDS if args.bare else ()) + (THIN_KINDS if args.thin else ())
             + KINDS[1:])
    results: Dict[str, List[Dict[str, float]]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in kinds:
            results[kind].append(one_round(kind, args.calls))
            print(f"round {r + 1} {kind}: {results[kind][-1]['calls/s']:,.0f} calls/s",
                  file=sys.stderr)
    cols = ["calls/s", "wall", "client user", "client sys", "server user", "server sys"]
    print(f"{args.calls:,} sequential add calls per round, median of {args.rounds} rounds;"
          f" times in µs per call (CPU {CPU} for both processes)\n")
    print("| server | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    med = {k: {c: statistics.median(x[c] for x in results[k]) for c in cols} for k in kinds}
    for kind in kinds:
        cells = [f"{med[kind][c]:,.0f}" if c == "calls/s" else f"{med[kind][c]:.1f}" for c in cols]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print()
    floors = ("raw", "raw-threads")
    for kind in (k for k in kinds if k not in floors):
        for floor in floors:
            print(f"{kind} / {floor}: {med[kind]['calls/s'] / med[floor]['calls/s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
