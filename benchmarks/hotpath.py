"""What does one small call cost in CPU, layer by layer, in one process?

A benchmark script, not a test. W1 measures a round trip between two
processes, so the kernel, the scheduler and this VM's noise all go into it.
This script times only the Python work of one ``add(i, 1)`` call, with no
sockets and no other process, so that two versions of the hot paths can be
compared in a few seconds:

* ``broker client`` / ``broker server``: the sans-IO brokers alone (encode
  the call, decode the answer / decode the call, encode the answer), the
  floor the session layers build on;
* ``session client``: a blocking proxy call on a ``ThreadedSession`` whose
  socket is a stand-in that hands back the answer at once;
* ``session server``: a ``GreenSession`` reader serving calls from a
  stand-in socket that always has the next call ready (the usual state of a
  pinned W1 run).

Each figure is the best of ``--rounds`` runs of ``--calls`` calls, in
microseconds per call. The session rows print their ratio to the broker
rows, measured in the same run. A process's memory layout can shift every
figure by up to 1.7x on some machines (try a few ``PYTHONHASHSEED`` values),
so compare versions under the same seed.

    python benchmarks/hotpath.py [--calls 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import collections
import time
from typing import Any, Callable, Deque, Dict, List

from syncpb.broker import Broker
from syncpb.flavors import Root
from syncpb.green import GreenSession
from syncpb.threaded import ThreadedSession


class Calculator(Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b


def ready_pair() -> tuple:
    """A client and a server broker that have finished the handshake."""
    server, client = Broker(root=Calculator()), Broker(is_client=True)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


class _Socket:
    """Stand-in for a connected socket: replies come from ``replies``."""

    family = None

    def __init__(self, replies: Callable[[], bytes]) -> None:
        self.recv_reply = replies
        self.sent: List[bytes] = []
        self._sock = self  # looks like gevent's socket over a raw one

    def recv(self, size: int) -> bytes:
        return self.recv_reply()

    def recv_into(self, buffer: Any) -> int:
        reply = self.recv_reply()
        memoryview(buffer)[:len(reply)] = reply
        return len(reply)

    def send(self, data: bytes, flags: int = 0) -> int:
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


def best(run: Callable[[int], float], calls: int, rounds: int) -> float:
    return min(run(calls) for _ in range(rounds)) / calls * 1e6


def broker_server(calls: int) -> float:
    client, server = ready_pair()
    client.call(b"root", "add", (5000, 1), {})
    message = client.data_to_send()
    start = time.perf_counter()
    for _ in range(calls):
        (event,) = server.receive_data(message)
        server.answer(event.request_id, event.method(*event.args))
        server.pieces_to_send()
    return time.perf_counter() - start


def broker_client(calls: int) -> float:
    client, server = ready_pair()
    answers: Dict[int, bytes] = {}
    for request_id in range(1, calls + 1):
        server.answer(request_id, request_id)
        answers[request_id] = server.data_to_send()
    start = time.perf_counter()
    for i in range(calls):
        request_id = client.call(b"root", "add", (i, 1), {})
        client.pieces_to_send()
        client.receive_data(answers[request_id])
    return time.perf_counter() - start


def session_client(calls: int) -> float:
    server = Broker(root=Calculator())
    offer = server.data_to_send()
    answers: Deque[bytes] = collections.deque()
    sock = _Socket(answers.popleft)
    sock._sock = None  # a plain blocking socket, as connect() makes
    session = ThreadedSession(sock, Broker(is_client=True), "hotpath")
    session.feed(offer)
    server.receive_data(b"".join(sock.sent))
    for request_id in range(1, calls + 1):
        server.answer(request_id, request_id)
        answers.append(server.data_to_send())
    add = session.root_reference().add
    start = time.perf_counter()
    for i in range(calls):
        add(i, 1)
    elapsed = time.perf_counter() - start
    session.close()
    return elapsed


def session_server(calls: int) -> float:
    client = Broker(is_client=True)
    client.receive_data(Broker(root=Calculator()).data_to_send())
    hello = client.data_to_send()
    client.call(b"root", "add", (5000, 1), {})
    message = client.data_to_send()
    feed: List[Any] = [hello] + [message] * calls
    feed.reverse()
    session = GreenSession(_Socket(lambda: feed.pop() if feed else b""),
                           Broker(root=Calculator()), "hotpath")
    start = time.perf_counter()
    session.run()  # returns when the stand-in reports the end of the stream
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    figures = {name: best(run, options.calls, options.rounds) for name, run in [
        ("broker client", broker_client), ("broker server", broker_server),
        ("session client", session_client), ("session server", session_server)]}
    print(f"{'path':<16} {'us/call':>8}  {'x broker':>8}")
    for name, value in figures.items():
        side = name.split()[1]
        ratio = "" if name.startswith("broker") else f"{value / figures['broker ' + side]:.2f}x"
        print(f"{name:<16} {value:8.2f}  {ratio:>8}")


if __name__ == "__main__":
    main()
