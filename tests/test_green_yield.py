"""The server's read loop gives the CPU to a peer that shares it (GreenCore._look_again,
and GreenCore._read_rest_green for calls that arrive in pieces).

Unit tests of the policy, with a stand-in socket whose "peer" sends its
next call when the server yields the CPU (a peer on the same CPU) or only
when the hub reports the socket readable (a peer elsewhere). They count
what the loop did; nothing here is timed. The real-socket paths are
covered by every end-to-end test, which run with this policy on. Each
session runs in its own OS thread and hub (:mod:`hubthread`), never in the
test runner's main thread.
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import pytest

import importlib

from syncpb.assembly import Assembly
from syncpb.broker import AnswerReceived, Broker
from syncpb.flavors import Root
from syncpb.green import YIELD_MISSES, YIELD_PROBE, GreenSession
from syncpb.session import GreenCore

# The module whose read loop the session runs (syncpb.sessioncore, or its
# compiled twin): where the loop finds sched_yield and wait_readable.
core = importlib.import_module(GreenCore.__module__)

from hubthread import run_in_gevent_thread


class Calculator(Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b


class StandInSocket:
    """Looks like gevent's socket over a raw one. ``ready`` holds what a read
    returns next; an empty ``ready`` reads as "nothing yet" (BlockingIOError),
    and once ``later`` is empty too, as the end of the stream."""

    family = None

    def __init__(self, ready: List[bytes], later: List[bytes]) -> None:
        self.ready, self.later = ready, later
        self.sent: List[bytes] = []
        self._sock = self

    def arrive(self) -> None:
        """The peer sends its next message (a list: its pieces, read one by one)."""
        if self.later:
            message = self.later.pop(0)
            self.ready.extend(message if isinstance(message, list) else [message])

    def recv_into(self, buffer: Any) -> int:
        if not self.ready:
            if self.later:
                raise BlockingIOError
            return 0
        data = self.ready.pop(0)
        memoryview(buffer)[:len(data)] = data
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.ready.pop(0) if self.ready else b""

    def send(self, data: Any, flags: int = 0) -> int:
        self.sent.append(bytes(data))
        return len(data)

    def sendall(self, data: Any) -> None:
        self.sent.append(bytes(data))

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


def serve(calls: int, monkeypatch: Any, on_yield: Callable[[StandInSocket], None],
          in_pieces: bool = False) -> Tuple[List[Any], int, int, GreenSession]:
    """Serve ``calls`` add calls; returns (answers, yields, hub waits, session).
    With ``in_pieces``, every call arrives in two reads, so the session
    reads them into the broker's buffer (GreenCore._read_rest_green)."""
    offer = Broker(root=Calculator()).data_to_send()  # what every server broker says first
    client = Broker(is_client=True)
    client.receive_data(offer)
    hello = client.data_to_send()
    messages = []
    for i in range(calls):
        client.call(b"root", "add", (i, 1), {})
        messages.append(client.data_to_send())
    if in_pieces:
        halves = [[m[:len(m) // 2], m[len(m) // 2:]] for m in messages]
        sock = StandInSocket([hello] + halves[0], list(halves[1:]))
    else:
        sock = StandInSocket([hello, messages[0]], list(messages[1:]))
    counts = {"yields": 0, "waits": 0}

    def sched_yield() -> None:
        counts["yields"] += 1
        on_yield(sock)

    def wait_readable(_sock: Any) -> bool:
        counts["waits"] += 1
        sock.arrive()  # the hub woke us: the peer's call is there
        return True

    monkeypatch.setattr(core, "_sched_yield", sched_yield)
    monkeypatch.setattr(core, "wait_readable", wait_readable)

    def run() -> GreenSession:
        session = GreenSession(sock, Broker(root=Calculator()), "stand-in")
        session.run()  # returns at the end of the stream
        return session

    session = run_in_gevent_thread(run)
    sent = b"".join(sock.sent)
    assert sent.startswith(offer)  # the session's own broker's offer: the client has one
    events = client.receive_data(sent[len(offer):])
    answers = [e.value for e in events if isinstance(e, AnswerReceived)]
    return answers, counts["yields"], counts["waits"], session


def test_a_peer_on_this_cpu_is_read_after_a_yield_without_the_hub(monkeypatch):
    answers, yields, waits, _ = serve(50, monkeypatch, StandInSocket.arrive)
    assert answers == [i + 1 for i in range(50)]
    assert yields == 49 and waits == 0  # every empty read: one yield, then the call


def test_a_peer_elsewhere_costs_a_few_yields_then_one_per_probe(monkeypatch):
    empty_reads = YIELD_MISSES + 2 * YIELD_PROBE + 10
    answers, yields, waits, session = serve(empty_reads + 1, monkeypatch, lambda sock: None)
    assert len(answers) == empty_reads + 1
    assert waits == empty_reads  # every call came through the hub
    assert yields == YIELD_MISSES + 2  # then one probe per YIELD_PROBE empty reads
    assert session._yield_misses == empty_reads


def count_buffered_reads(monkeypatch: Any) -> List[int]:
    """Count the reads made into a broker's buffer (Assembly.fill)."""
    reads = [0]
    fill = Assembly.fill

    def counted(self: Assembly, recv_into: Any, *args: Any) -> Any:
        def counting(*a: Any) -> int:
            reads[0] += 1
            return recv_into(*a)
        return fill(self, counting, *args)

    monkeypatch.setattr(Assembly, "fill", counted)
    return reads


def test_calls_in_pieces_a_peer_on_this_cpu_is_read_after_a_yield(monkeypatch):
    reads = count_buffered_reads(monkeypatch)
    answers, yields, waits, _ = serve(50, monkeypatch, StandInSocket.arrive, in_pieces=True)
    assert answers == [i + 1 for i in range(50)]
    assert reads[0] >= 2 * 49  # (every call after the first: read into the buffer)
    assert yields == 49 and waits == 0


def test_calls_in_pieces_a_peer_elsewhere_costs_a_few_yields(monkeypatch):
    reads = count_buffered_reads(monkeypatch)
    empty_reads = YIELD_MISSES + 2 * YIELD_PROBE + 10
    answers, yields, waits, session = serve(empty_reads + 1, monkeypatch, lambda sock: None,
                                            in_pieces=True)
    assert answers == [i + 1 for i in range(empty_reads + 1)]
    assert reads[0] >= 2 * empty_reads
    assert waits == empty_reads
    assert yields == YIELD_MISSES + 2
    assert session._yield_misses == empty_reads


def test_a_probe_that_finds_data_turns_yielding_back_on(monkeypatch):
    moved = {"n": 0}

    def peer_moves_here_later(sock: StandInSocket) -> None:
        moved["n"] += 1
        if moved["n"] > YIELD_MISSES:  # the first probe finds the peer here
            sock.arrive()

    calls = YIELD_MISSES + YIELD_PROBE + 20
    answers, yields, waits, session = serve(calls, monkeypatch, peer_moves_here_later)
    assert answers == [i + 1 for i in range(calls)]
    assert waits == YIELD_MISSES + YIELD_PROBE - 1  # until the probe
    assert yields == YIELD_MISSES + 1 + 19  # the misses, the probe, then every empty read
    assert session._yield_misses == 0


def test_without_sched_yield_the_loop_waits_on_the_hub(monkeypatch):
    monkeypatch.setattr(core, "_sched_yield", None)  # (a platform without it)

    def look() -> Any:
        session = GreenSession(StandInSocket([], [b"x"]), Broker(root=Calculator()), "no-yield")
        area = bytearray(16)
        return session._look_again(session._raw_sock.recv_into, memoryview(area), area)

    assert run_in_gevent_thread(look) is None


@pytest.mark.parametrize("error", [ConnectionResetError, OSError])
def test_an_error_on_the_second_read_goes_to_the_reporting_read(monkeypatch, error):
    monkeypatch.setattr(core, "_sched_yield", lambda: None)

    def failing(buffer: Any) -> int:
        raise error("gone")

    def look() -> Any:
        session = GreenSession(StandInSocket([], [b"x"]), Broker(root=Calculator()), "error")
        area = bytearray(16)
        return session._look_again(failing, memoryview(area), area)

    assert run_in_gevent_thread(look) == b""
