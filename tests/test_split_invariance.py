"""Split invariance: a byte stream decodes to the same events, the same
output and the same error however the network cuts it.

Every recorded Twisted stream (both directions) and seeded random mutations
of it are fed to a fresh broker three ways: whole, in random pieces and
byte by byte. The three runs must agree exactly. This is the invariant the
jelly reader's empty-list fast path broke (an empty list followed by a
container token was accepted whole and refused split, and a split message
ending in ``00 80`` escaped as the internal ``Incomplete``).
"""

from __future__ import annotations

import os
import random
from typing import Any, List, Tuple

import pytest

from syncpb import banana
from syncpb.broker import Broker, Limits, ProtocolViolation
from syncpb.flavors import Root
from syncpb.jelly import SecurityOptions

from vectors import scenario_names, stream

HANDSHAKE = bytes.fromhex("02827062028013870681")


class AnyRoot(Root):
    def remote_echo(self, *args: Any) -> Any:
        return args

    remote_add = remote_getChild = remote_sumPoint = remote_echo


def shape(value: Any, depth: int = 0) -> Any:
    """A comparable picture of a decoded value (proxies and copies by type)."""
    if depth > 50:
        return "..."
    if isinstance(value, (bytes, str, int, float, bool, type(None))):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return (type(value).__name__, [shape(v, depth + 1) for v in value]
                if not isinstance(value, (set, frozenset)) else sorted(map(repr, value)))
    if isinstance(value, dict):
        return ("dict", sorted((repr(k), shape(v, depth + 1)) for k, v in value.items()))
    if isinstance(value, BaseException):
        return (type(value).__name__, str(value))
    return type(value).__name__


def picture(event: Any) -> Tuple[Any, ...]:
    kind = type(event).__name__
    if isinstance(event, ProtocolViolation):
        return (kind, type(event.error).__name__, str(event.error))
    fields = getattr(event, "__dict__", None) or {
        name: getattr(event, name) for name in getattr(event, "__slots__", ())}
    out = []
    for name, value in sorted(fields.items()):
        if name == "method":
            value = getattr(value, "__name__", repr(value))
        out.append((name, shape(value)))
    return (kind, tuple(out))


def without_counts(tree: Any) -> Any:
    """A sent message with failures' ``count`` (a process-wide serial) zeroed."""
    if isinstance(tree, list):
        if len(tree) == 2 and tree[0] == [b"unicode", b"count"]:
            return [tree[0], 0]
        return [without_counts(item) for item in tree]
    return tree


def run(data: bytes, pieces: List[int], is_client: bool) -> Tuple[List[Any], Any]:
    """Feed ``data`` cut at ``pieces`` sizes; the events' pictures and the output."""
    broker = (Broker(is_client=True, security=SecurityOptions()) if is_client
              else Broker(root=AnyRoot(), limits=Limits()))
    out = broker.data_to_send()
    events: List[Any] = []
    at = 0
    for size in pieces:
        events += [picture(e) for e in broker.receive_data(data[at:at + size])]
        out += broker.data_to_send()
        at += size
    assert at >= len(data)
    return events, without_counts(banana.Decoder().feed(out))


def cuts(rng: random.Random, length: int) -> List[int]:
    sizes = []
    while sum(sizes) < length:
        sizes.append(rng.choice((1, 2, 3, 7, 20, 64, 300)))
    return sizes


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(data) + 1)
        action = rng.randrange(6)
        if action == 0 and where < len(data):
            data[where] ^= 1 << rng.randrange(8)
        elif action == 1 and where < len(data):
            data[where] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x87, 0xFF))
        elif action == 2:
            data[where:where] = rng.choice((b"\x00\x80", b"\x01\x80", b"\x05\x87", b"\x02\x80",
                                            bytes([rng.randrange(256)])))
        elif action == 3 and where < len(data):
            del data[where:where + rng.randint(1, 3)]
        elif action == 4:
            del data[where:]
        else:
            span = data[rng.randrange(len(data) + 1):][:rng.randint(1, 30)]
            data[where:where] = span
    return bytes(data)


def assert_split_invariant(data: bytes, is_client: bool, rng: random.Random) -> None:
    whole = run(data, [max(len(data), 1)], is_client)
    assert run(data, cuts(rng, len(data)), is_client) == whole
    assert run(data, [1] * len(data), is_client) == whole


#: Mutations per stream (SYNCPB_SPLIT_MUTATIONS raises it for a longer search).
MUTATIONS = int(os.environ.get("SYNCPB_SPLIT_MUTATIONS", "40"))
STREAMS = [(name, direction) for name in scenario_names() for direction in ("c2s", "s2c")]


@pytest.mark.parametrize("name,direction", STREAMS)
def test_recorded_streams_decode_the_same_however_split(name, direction):
    data, _ = stream(name, direction)
    assert_split_invariant(data, direction == "s2c", random.Random(name))


@pytest.mark.parametrize("name,direction", STREAMS)
def test_mutated_streams_decode_the_same_however_split(name, direction):
    data, _ = stream(name, direction)
    rng = random.Random(f"{name}/{direction}")
    for _ in range(MUTATIONS):
        assert_split_invariant(mutate(rng, data), direction == "s2c", rng)


def test_empty_list_before_a_container_token_is_refused_however_split():
    # The reproduction from issue 12: kwargs sent as an empty list (no
    # "dictionary" head) followed by a stray "dictionary" vocabulary token.
    call = (bytes.fromhex("07801a8701810482726f6f740482") + b"echo"
            + bytes.fromhex("018102800b870581" "0080" "0587"))
    msg = HANDSHAKE + call
    whole, _ = run(msg, [len(msg)], False)
    assert whole[-1][0] == "ProtocolViolation" and "empty list" in whole[-1][2]
    for at in range(1, len(msg)):
        assert run(msg, [at, len(msg) - at], False)[0] == whole
    # the same message ending exactly at the empty list
    trimmed = msg[:-2]
    ending, _ = run(trimmed, [len(trimmed)], False)
    assert ending[-1][0] == "ProtocolViolation" and "empty list" in ending[-1][2]
    assert run(trimmed, [20, len(trimmed) - 20], False)[0] == ending
