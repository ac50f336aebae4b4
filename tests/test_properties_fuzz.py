"""Property-based fuzzing of the sans-IO codec layers (hypothesis).

Two families of properties:

* **Round trips with identity.** Value graphs built from every supported
  type, with shared and cyclic structure inserted on purpose (a list that
  holds itself, a dict holding a list holding the dict, one tuple reached
  twice, a cycle through a tuple and a list), come back from Jelly+Banana
  and from a broker pair (an echo call, cut in random pieces) with the same
  *identity* structure: each object of the original maps to exactly one
  object of the copy, and no two originals share one.
* **Hostile bytes.** Any byte string (random, or a recorded Twisted stream
  mutated) fed to the Banana :class:`~syncpb.banana.Decoder`, to a Jelly
  :class:`~syncpb.jelly.Reader` and to a server :class:`~syncpb.broker.Broker`
  (before and after the handshake), whole or in pieces, gives results, a
  :class:`~syncpb.errors.SyncPBError` or a ``ProtocolViolation`` event, never
  another exception; deep nesting and huge length headers are refused
  without recursion errors or allocating what they claim.
"""

from __future__ import annotations

import datetime
import decimal
import math
import os
import tracemalloc
from typing import Any, Callable, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncpb import banana
from syncpb.broker import AnswerReceived, Broker, CallReceived, ProtocolViolation
from syncpb.errors import BananaError, SyncPBError
from syncpb.flavors import Root
from syncpb.jelly import Incomplete, Reader, SecurityOptions, Writer

from brokerpair import connected_pair, run_calls
from vectors import scenario_names, stream

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])


#: Multiplies every property's number of cases (SYNCPB_FUZZ_SCALE=50 for a longer search).
SCALE = float(os.environ.get("SYNCPB_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    """Settings of one property: ``examples`` cases (times SCALE), no deadline."""
    return settings(FAST, max_examples=max(1, int(examples * SCALE)))


HANDSHAKE = bytes.fromhex("02827062028013870681")  # 'pb' chosen, ['version', 6]
INT_LIMIT = 2**448  # 64 prefix bytes of 7 bits
BOUNDARY_INTS = [0, 127, 128, 16383, 16384, 2097151, 2097152, 2**31 - 1, 2**31,
                 -(2**31), -(2**31) - 1, INT_LIMIT - 1, -(INT_LIMIT - 1)]

# ---------------------------------------------------------------- values

words = st.sampled_from(banana.VOCABULARY[1:])  # strings the pb dialect compresses
decimals = st.builds(
    lambda sign, digits, exponent: decimal.Decimal((sign if any(digits) else 0, digits, exponent)),
    st.integers(0, 1), st.lists(st.integers(0, 9), min_size=1, max_size=60).map(tuple),
    st.one_of(st.integers(-30, 30), st.integers(-(10**12), 10**12)))
hashable_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(INT_LIMIT - 1), INT_LIMIT - 1),
    st.sampled_from(BOUNDARY_INTS), st.floats(allow_nan=False), st.text(max_size=20),
    st.binary(max_size=40), words, words.map(lambda w: w.decode()), decimals,
    st.datetimes(), st.dates(), st.times(), st.timedeltas())
scalars = st.one_of(hashable_scalars, st.floats(), st.binary(min_size=120, max_size=5000),
                    st.text(min_size=60, max_size=300))

CONTAINER_KINDS = ("list", "dict", "tuple", "set", "frozenset")
MUTABLE = {"list": list, "dict": dict, "set": set}


@st.composite
def graphs(draw: Callable[..., Any]) -> Any:
    """A value graph of up to 8 containers whose items are scalars or
    references to other containers of the graph (so sharing and cycles
    are frequent).

    Mutable containers are made empty first and filled last, so they can
    be reached from anything, themselves included. Tuples and frozensets
    are built in index order and refer only to lower-numbered immutables;
    members of sets, frozensets and dict keys are hashable.
    """
    count = draw(st.integers(1, 8))
    kinds = [draw(st.sampled_from(CONTAINER_KINDS)) for _ in range(count)]
    nodes: List[Any] = [MUTABLE[k]() if k in MUTABLE else None for k in kinds]
    hashable = [False] * count

    def item(limit: int, need_hash: bool) -> Any:
        """A scalar, or a container reference (immutables below ``limit``)."""
        refs = [i for i in range(count)
                if (kinds[i] in MUTABLE and not need_hash)
                or (i < limit and nodes[i] is not None and (hashable[i] or not need_hash))]
        if refs and draw(st.booleans()):
            return nodes[draw(st.sampled_from(refs))]
        return draw(hashable_scalars if need_hash else scalars)

    for i, kind in enumerate(kinds):  # immutables, in order
        if kind == "tuple":
            items = [item(i, False) for _ in range(draw(st.integers(0, 4)))]
            nodes[i] = tuple(items)
            hashable[i] = all(_hashable(x) for x in items)
        elif kind == "frozenset":
            nodes[i] = frozenset(item(i, True) for _ in range(draw(st.integers(0, 4))))
            hashable[i] = True
    for i, kind in enumerate(kinds):  # then fill the mutables
        node = nodes[i]
        for _ in range(draw(st.integers(0, 4))):
            if kind == "list":
                node.append(item(count, False))
            elif kind == "set":
                node.add(item(count, True))
            elif kind == "dict":
                node[item(count, True)] = item(count, False)
    return nodes[draw(st.integers(0, count - 1))]


def _hashable(value: Any) -> bool:
    """Usable as a set member or dict key that a copy can be found by (no NaN)."""
    if type(value) is float:
        return not math.isnan(value)
    if type(value) is tuple:
        return all(_hashable(item) for item in value)
    try:
        hash(value)
    except TypeError:
        return False
    return True


values = st.one_of(scalars, graphs())
CONTAINERS = (list, dict, tuple, set, frozenset)


def same_scalar(a: Any, b: Any) -> bool:
    if type(a) is float:
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is decimal.Decimal:  # digits and exponent too: 1.0 is not 1.00
        return a.as_tuple() == b.as_tuple()
    return bool(a == b)


def assert_same_graph(original: Any, copy: Any) -> None:
    """``copy`` equals ``original`` with exact types, and its containers map
    one-to-one onto the original's (shared stays shared, cycles stay cycles)."""
    forward: Dict[int, Any] = {}  # id(original container) -> its copy
    backward: Dict[int, Any] = {}  # id(copy container) -> its original
    todo: List[Tuple[Any, Any]] = [(original, copy)]
    while todo:
        a, b = todo.pop()
        assert type(a) is type(b), (a, b)
        if type(a) not in CONTAINERS:
            assert same_scalar(a, b), (a, b)
            continue
        if id(a) in forward:
            assert forward[id(a)] is b, "a shared object came back as separate copies"
            continue
        assert id(b) not in backward, "separate objects came back as one"
        forward[id(a)], backward[id(b)] = b, a
        assert len(a) == len(b)
        if type(a) is dict:
            for (ka, va), (kb, vb) in zip(a.items(), b.items()):
                todo += [(ka, kb), (va, vb)]
        elif type(a) in (set, frozenset):
            members = {x: x for x in b}
            todo += [(x, members[x]) for x in a]
        else:
            todo += list(zip(a, b))


def jelly_round_trip(value: Any, vocab: bool) -> Any:
    data = Writer(vocab=vocab).jelly(value)
    reader = Reader(data, 0, SecurityOptions(), vocab=vocab)
    result = reader.jelly()
    assert reader.pos == len(data)
    assert banana.split_messages(data) == ([data], b"")  # exactly one Banana value
    return result


@fuzz(400)
@given(values, st.booleans())
def test_any_value_graph_round_trips_with_its_identity_structure(value: Any, vocab: bool) -> None:
    assert_same_graph(value, jelly_round_trip(value, vocab))


class Echo(Root):
    def remote_echo(self, value: Any) -> Any:
        return value


def pieces(data: bytes, sizes: List[int]) -> List[bytes]:
    out, at = [], 0
    for size in sizes:
        out.append(data[at:at + size])
        at += size
    return [p for p in out if p] + ([data[at:]] if at < len(data) else [])


@fuzz(100)
@given(values, st.lists(st.integers(1, 40), max_size=30),
       st.lists(st.integers(1, 40), max_size=30))
def test_echo_through_a_broker_pair_in_random_pieces(value: Any, cuts_in: List[int],
                                                     cuts_out: List[int]) -> None:
    server, client = connected_pair(Echo())
    request = client.call(b"root", "echo", (value,))
    events: List[Any] = []
    for piece in pieces(client.data_to_send(), cuts_in):
        events += server.receive_data(piece)
    (call,) = events
    assert isinstance(call, CallReceived)
    assert_same_graph(value, call.args[0])
    run_calls(server, events)
    got: List[Any] = []
    for piece in pieces(server.data_to_send(), cuts_out):
        got += client.receive_data(piece)
    (answer,) = got
    assert isinstance(answer, AnswerReceived) and answer.request_id == request
    assert_same_graph(value, answer.value)


def test_handmade_cycles_and_sharing() -> None:
    loop: List[Any] = []
    loop.append(loop)
    box: Dict[str, Any] = {}
    inner = [box]
    box["inner"] = inner
    shared = [1, "x"]
    through_tuple: List[Any] = []
    pair = (through_tuple, 1)
    through_tuple.append(pair)
    frozen = frozenset({(1, 2)})
    graphs_made = [loop, box, inner, [shared, shared, (shared,), {"s": shared}], pair,
                   through_tuple, [frozen, {frozen: frozen}], {"self": box, "l": loop}]
    for vocab in (True, False):
        for value in graphs_made:
            copy = jelly_round_trip(value, vocab)
            assert_same_graph(value, copy)
    copy = jelly_round_trip(loop, True)
    assert copy[0] is copy
    copy = jelly_round_trip(box, True)
    assert copy["inner"][0] is copy
    copy = jelly_round_trip([shared, shared], True)
    assert copy[0] is copy[1] and copy[0] == shared


def test_cycle_through_two_tuples_and_a_list_round_trips() -> None:
    # Regression: rooted at a tuple, t2 -> list -> t1 -> t2 reached t1 while
    # t2 was still being built, and the reader refused it ("unsupported cycle
    # through a tuple"); Twisted sends exactly these bytes and decodes them.
    loop: List[Any] = []
    t2 = (loop,)
    t1 = (t2,)
    loop.append(t1)
    twisted_bytes = banana.encode([b"reference", 1, [b"tuple", [b"list", [
        b"tuple", [b"dereference", 1]]]]])
    assert Writer().jelly(t2) == twisted_bytes
    copy = Reader(twisted_bytes, 0, SecurityOptions()).jelly()
    assert copy[0][0][0] is copy
    assert_same_graph(t2, copy)
    chain: List[Any] = []  # a long chain of tuples waiting for each other
    previous: Any = (chain,)
    root = previous
    for _ in range(20_000):
        previous = (previous,)
        chain.append(previous)
    copy = jelly_round_trip(root, True)
    assert copy[0][0][0] is copy and copy[0][-1][0] is copy[0][-2]
    assert_same_graph(root, copy)


@pytest.mark.parametrize("tree", [
    [b"reference", 1, [b"tuple", [b"dereference", 1]]],
    [b"list", [b"reference", 1, [b"tuple", [b"list", [b"dereference", 1]],
                                 [b"dereference", 1]]]],
    [b"reference", 1, [b"tuple", [b"list", [b"reference", 2, [
        b"tuple", [b"dereference", 1], [b"dereference", 2]]]]]],
    [b"reference", 1, [b"tuple", [b"set", [b"dereference", 1]]]],
    [b"reference", 1, [b"tuple", [b"dictionary", [[b"dereference", 1], 1]]]],
])
def test_cycles_python_cannot_build_are_refused(tree: Any) -> None:
    # a tuple holding itself with no list or dict on the way, or a cycle
    # through a set member or a dictionary key: no such Python value exists
    with pytest.raises(SyncPBError):
        Reader(banana.encode(tree), 0, SecurityOptions()).jelly()


def test_values_without_a_pb_form_are_refused_locally() -> None:
    writer = Writer()
    for bad in (INT_LIMIT, -INT_LIMIT, 10**200):
        with pytest.raises(BananaError):
            writer.jelly(bad)
    for no_form in (decimal.Decimal("NaN"), decimal.Decimal("-Infinity"), object(),
                    datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)):
        with pytest.raises(TypeError):
            writer.jelly(no_form)


# ---------------------------------------------------------------- hostile bytes

def recorded_streams() -> List[bytes]:
    out = []
    for name in scenario_names():
        for direction in ("c2s", "s2c"):
            data, _ = stream(name, direction)
            out.append(data)
    return out


STREAMS = recorded_streams()
SPECIAL = [0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0xFF]
TOKENS = [b"\x00\x80", b"\x01\x80", b"\x02\x80", b"\x08\x87", b"\x04\x87", b"\x03\x87",
          b"\x0b\x87", b"\x05\x87", banana.encode_prefix(2**60) + b"\x80",
          banana.encode_prefix(10**12) + b"\x82", b"\x7f" * 70 + b"\x81", b"\x84"]


@st.composite
def mutated(draw: Callable[..., Any]) -> bytes:
    """A recorded Twisted stream with a few hypothesis-chosen mutations."""
    data = bytearray(draw(st.sampled_from(STREAMS)))
    for _ in range(draw(st.integers(1, 5))):
        where = draw(st.integers(0, len(data)))
        action = draw(st.integers(0, 5))
        if action == 0 and where < len(data):
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == 1 and where < len(data):
            data[where] = draw(st.sampled_from(SPECIAL))
        elif action == 2:
            data[where:where] = draw(st.sampled_from(TOKENS))
        elif action == 3:
            del data[where:where + draw(st.integers(1, 8))]
        elif action == 4:
            del data[where:]
        else:
            start = draw(st.integers(0, len(data)))
            data[where:where] = data[start:start + draw(st.integers(1, 40))]
    return bytes(data)


hostile = st.one_of(st.binary(max_size=300), mutated())


def decode_plain(data: bytes, sizes: List[int]) -> Any:
    decoder, out = banana.Decoder(), []
    try:
        for piece in pieces(data, sizes):
            out += decoder.feed(piece)
    except SyncPBError as exc:
        return ("error", out, str(exc))
    return ("ok", out, decoder.buffered)


def read_jelly(data: bytes, vocab: bool, raw: bool = False) -> Any:
    """Read Jelly (or plain Banana with ``raw``) values until the data ends."""
    reader = Reader(data, 0, SecurityOptions(), vocab=vocab)
    values = []
    try:
        while reader.pos < len(data):
            values.append(reader.raw() if raw else reader.jelly())
    except (SyncPBError, Incomplete) as exc:  # Incomplete: the input ran out
        return values, type(exc)
    return values, None


def server_broker(handshake: bool) -> Broker:
    broker = Broker(root=Echo())
    broker.data_to_send()
    if handshake:
        assert broker.receive_data(HANDSHAKE)  # Ready
        broker.data_to_send()
    return broker


def feed_broker(broker: Broker, chunks: List[bytes]) -> List[Any]:
    """Feed chunks, run the calls, flush the output; the events' kinds."""
    kinds: List[Any] = []
    for chunk in chunks:
        events = broker.receive_data(chunk)
        violations = [e for e in events if isinstance(e, ProtocolViolation)]
        assert not violations or (len(violations) == 1 and events[-1] is violations[0])
        for event in violations:
            assert isinstance(event.error, SyncPBError), event.error
        run_calls(broker, events)
        broker.data_to_send()
        kinds += [type(e).__name__ for e in events]
    return kinds


@fuzz(300)
@given(hostile, st.lists(st.integers(1, 64), max_size=40))
def test_decoder_gives_trees_or_a_banana_error_however_split(data: bytes,
                                                             sizes: List[int]) -> None:
    whole = decode_plain(data, [len(data)])
    split = decode_plain(data, sizes)
    if whole[0] == "ok":
        assert split == whole
    else:  # a feed() that raises drops the trees it completed before the error
        assert split[0] == "error" and split[2] == whole[2]
        assert split[1][:len(whole[1])] == whole[1]


@fuzz(300)
@given(hostile, st.booleans())
def test_reader_gives_values_or_a_syncpb_error(data: bytes, vocab: bool) -> None:
    read_jelly(data, vocab)
    read_jelly(data[len(HANDSHAKE):], vocab)
    read_jelly(data, vocab, raw=True)


@fuzz(300)
@given(hostile, st.booleans(), st.lists(st.integers(1, 64), max_size=40))
def test_server_broker_gives_events_or_a_violation(data: bytes, handshake: bool,
                                                   sizes: List[int]) -> None:
    whole = feed_broker(server_broker(handshake), [data])
    assert feed_broker(server_broker(handshake), pieces(data, sizes)) == whole


# ---------------------------------------------------------------- deep and huge

DEPTH = 100_000
#: ``['message', 1, 'root', 'echo', 1, ...]``: a call's head, its arguments to follow.
CALL_HEAD = b"\x07\x80\x1a\x87\x01\x81\x04\x82root\x04\x82echo\x01\x81"
DEEP_PATTERNS = {
    "plain lists": b"\x01\x80",
    "jelly lists": b"\x02\x80\x08\x87",
    "jelly tuples": b"\x02\x80\x0b\x87",
    "named lists": b"\x02\x80\x04\x82list",
    "references": b"\x03\x80\x04\x87\x01\x81",
    "dict values": b"\x02\x80\x05\x87\x02\x80\x01\x81",
}


@pytest.mark.parametrize("name", sorted(DEEP_PATTERNS))
def test_deep_nesting_is_refused_or_built_without_recursion(name: str) -> None:
    unit = DEEP_PATTERNS[name]
    body = unit * DEPTH + b"\x00\x81"
    tree = banana.Decoder().feed(body)  # the plain decoder is iterative
    assert len(tree) == 1
    with pytest.raises(SyncPBError, match="nested deeper|without a type name"):
        Reader(body, 0, SecurityOptions()).jelly()
    message = CALL_HEAD + body + b"\x01\x80\x05\x87"  # the deep value, then empty kwargs
    for handshake in (True, False):
        for chunks in ([message], [message[i:i + 4096] for i in range(0, len(message), 4096)]):
            broker = server_broker(handshake)
            events: List[Any] = []
            for chunk in chunks:
                events += broker.receive_data(chunk)
            assert isinstance(events[-1], ProtocolViolation), events[-1:]


HUGE_HEADERS = {
    "list of 2**60": banana.encode_prefix(2**60) + b"\x80",
    "string of 10**12": banana.encode_prefix(10**12) + b"\x82",
    "string of 640 KiB": banana.encode_prefix(banana.SIZE_LIMIT) + b"\x82",
    "list of 640 Ki": banana.encode_prefix(banana.SIZE_LIMIT) + b"\x80" + b"\x00\x81" * 10,
}
PEAK_LIMIT = 10 * 1024 * 1024


def peak_of(action: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        try:
            action()
        except (SyncPBError, Incomplete):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", sorted(HUGE_HEADERS))
def test_huge_headers_allocate_nothing_like_what_they_claim(name: str) -> None:
    header = HUGE_HEADERS[name]
    in_call = CALL_HEAD + b"\x02\x80\x0b\x87" + header
    generous = 2**62
    actions: List[Callable[[], Any]] = [
        lambda: banana.Decoder().feed(header),
        lambda: banana.Decoder(size_limit=generous).feed(header + b"\x00" * 1000),
        lambda: Reader(header, 0, SecurityOptions()).jelly(),
        lambda: Reader(in_call, 0, SecurityOptions(), size_limit=generous).raw(),
        lambda: server_broker(True).receive_data(in_call),
        lambda: server_broker(False).receive_data(header),
    ]
    for action in actions:
        assert peak_of(action) < PEAK_LIMIT, name
    broker = server_broker(True)
    kinds = feed_broker(broker, [in_call[:30], in_call[30:]] + [b"\x00\x81" * 64] * 4)
    assert "CallReceived" not in kinds
