"""The broker's core (syncpb/brokercore.py and its compiled twin,
syncpb/_cbrokercore.pyx): the expected one is in use, and both give the same
events and the same bytes for the same exchanges.

The rest of the broker suites run against both as well: under `make test`
with the compiled core, then with SYNCPB_PURE=1 (the Makefile's TWIN_TESTS).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncpb import brokercore, speedups
from syncpb.broker import Broker, BrokerCore

ROOT = Path(__file__).resolve().parent.parent

# A transcript of many exchanges between two in-memory brokers: every event
# and every byte either side sends, printed. Run once per core and compared.
TRANSCRIPT = r'''
import random, sys
sys.path.insert(0, sys.argv[1])
from brokerpair import connected_pair
from syncpb.broker import Broker, Limits
from syncpb.events import CallReceived
from syncpb.flavors import Root

class Calc(Root):
    def remote_add(self, a, b=0):
        return a + b
    def remote_echo(self, value):
        return value
    def remote_fail(self, text):
        raise ValueError(text)

def show(events):
    out = []
    for e in events:
        name = type(e).__name__
        if name == "CallReceived":
            out.append((name, e.request_id, e.method.__name__, e.args, sorted(e.kwargs.items()),
                        e.answer_required))
        elif name == "AnswerReceived":
            out.append((name, e.request_id, repr(e.value)))
        elif name == "ErrorReceived":
            out.append((name, e.request_id, type(e.error).__name__, str(e.error)[:80]))
        else:
            out.append((name, str(getattr(e, "error", ""))[:120]))
    return out

def feed(broker, data, rng):
    cuts = sorted(rng.sample(range(1, len(data)), min(rng.randrange(3), len(data) - 1))) \
        if len(data) > 1 else []
    events = []
    for a, b in zip([0] + cuts, cuts + [len(data)]):
        events += broker.receive_data(data[a:b])
    return events

def serve(server, events):
    for e in events:
        if type(e) is CallReceived and e.answer_required:
            try:
                server.answer(e.request_id, e.method(*e.args, **e.kwargs), e.perspective)
            except Exception as exc:
                server.fail(e.request_id, exc, e.perspective)

rng = random.Random(1460)
values = [0, 1, -1, 2**21 - 1, 2**21, 2**70, 1.5, None, True, False, "text", b"bytes",
          "\u00e9t\u00e9", [1, [2, 3]], (1, 2), {"a": 1, 2: "b"}, {1, 2}, [], {}, "x" * 3000]
server, client = connected_pair(Calc(), limits=Limits(max_incoming_calls=3))
for step in range(400):
    kind = rng.randrange(6)
    if kind == 0:
        client.call(b"root", "add", (rng.randrange(-5, 5000), rng.randrange(10)))
    elif kind == 1:
        client.call(b"root", "echo", (rng.choice(values),))
    elif kind == 2:
        client.call(b"root", "add", (rng.randrange(100),), {"b": rng.randrange(100)})
    elif kind == 3:
        client.call(b"root", "fail", ("no",))
    elif kind == 4:
        client.call(b"root", rng.choice(["nosuch", "__class__", "add"]), (1, 2),
                    answer_required=rng.random() < 0.5)
    else:
        for _ in range(rng.randrange(1, 5)):
            client.call(b"root", "add", (step, 1))
    sent = client.data_to_send()
    print("C>", sent.hex())
    events = feed(server, sent, rng)
    print("S:", show(events))
    serve(server, events)
    answered = server.data_to_send()
    print("S>", answered.hex())
    print("C:", show(feed(client, answered, rng)))

# Bad input: each on a fresh pair; the events and the replies.
bad = [b"\x02\x80\x05\x82nosuch", b"\x03\x80\x06\x82answer\x7f\x81\x01\x81",
       b"\x07\x80\x07\x82message\x01\x81\x09\x81\x03\x82add\x01\x81"
       b"\x02\x80\x05\x82tuple\x01\x81\x01\x80\x0a\x82dictionary",
       b"\x07\x80\x07\x82message\x01\x81\x04\x82root\x03\x82add\x01\x81"
       b"\x02\x80\x03\x82set\x01\x81\x01\x80\x0a\x82dictionary",
       b"\x07\x80\x07\x82message\x01\x81\x04\x82root\x03\x82add\x01\x81"
       b"\x01\x81\x01\x80\x0a\x82dictionary",
       b"\x00\x80", b"\x01\x80\x01\x81"]
for data in bad:
    server, client = connected_pair(Calc())
    print("bad S:", show(server.receive_data(data)), server.data_to_send().hex())
    server, client = connected_pair(Calc())
    print("bad C:", show(client.receive_data(data)), client.data_to_send().hex())
'''


def transcript(pure: bool) -> str:
    done = subprocess.run(
        [sys.executable, "-c", TRANSCRIPT, str(ROOT / "tests")], capture_output=True,
        text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "SYNCPB_PURE": "1" if pure else "0"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_broker_runs_on_the_expected_core() -> None:
    compiled = speedups.load("_cbrokercore")
    if speedups.pure_forced() or compiled is None:
        assert BrokerCore is brokercore.BrokerCore
    else:
        assert BrokerCore is compiled.BrokerCore
        assert BrokerCore is not brokercore.BrokerCore
    assert Broker.__mro__[1] is BrokerCore


def test_both_cores_give_the_same_events_and_bytes() -> None:
    if speedups.load("_cbrokercore") is None and not speedups.pure_forced():
        pytest.skip("the compiled broker core is not built")
    pure, compiled = transcript(True), transcript(False)
    lines = pure.splitlines()
    assert len(lines) > 1600
    # The transcript covers what it is meant to: answers, errors, refused
    # calls, split messages and bad input on both sides.
    for phrase in ("AnswerReceived", "ErrorReceived", "CallReceived", "ProtocolViolation",
                   "No such method", "too many calls", "refused method name"):
        assert phrase in pure, phrase
    assert compiled.splitlines() == lines


def test_the_core_keeps_the_broker_attributes_settable_from_python() -> None:
    broker = Broker(is_client=True)
    broker._out = [b"x"]
    assert broker.pieces_to_send() == [b"x"]
    assert broker.pieces_to_send() == []
    with pytest.raises(AttributeError):
        broker.no_such_attribute = 1  # slots on both cores: no instance dict
    assert set(brokercore.CORE_SLOTS) <= set(dir(broker))
