"""The compiled framer (``syncpb._cframer.Framer``) against the pure-Python
reference (``syncpb.banana.PyFramer``), on the same inputs.

Both framers are driven the way the broker and ``split_messages`` drive
them (feed a chunk; when a message ends, record where, reset and feed the
rest of the chunk) and every step is recorded: each ``feed`` result, the
``long_strings`` records, and any exception's class and message. The two
records must be identical for whole messages, every split point, byte by
byte, random chunkings, trailing data, other buffer types, hostile bytes
and unusual limits. Feeding goes on after an error, so the state an error
leaves behind must agree too.

The module skips when the extension is not built, except under CI=true,
where that is a failure.
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable, List, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncpb import banana, speedups
from syncpb.errors import BananaError

try:
    from syncpb import _cframer
except ImportError as exc:  # not built
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"syncpb._cframer is not built ({exc})", allow_module_level=True)

CFramer = _cframer.Framer
PyFramer = banana.PyFramer

Step = Tuple[Any, ...]


def drive(cls: Callable[..., Any], chunks: Sequence[Any], *limits: Any,
          reset_each: bool = True) -> List[Step]:
    """Feed ``chunks`` to a new ``cls(*limits)``; return what happened."""
    framer = cls(*limits)
    steps: List[Step] = []
    for chunk in chunks:
        while True:
            try:
                end = framer.feed(chunk)
            except Exception as exc:  # noqa: BLE001 - compared, not handled
                steps.append(("error", type(exc), str(exc), list(framer.long_strings)))
                break
            steps.append(("fed", end, list(framer.long_strings)))
            if end is None:
                break
            if reset_each:
                framer.reset()
            chunk = chunk[end:]
            if not len(chunk):
                break
    return steps


def same(chunks: Sequence[Any], *limits: Any, reset_each: bool = True) -> List[Step]:
    """Both framers give the same record; return it."""
    expected = drive(PyFramer, chunks, *limits, reset_each=reset_each)
    got = drive(CFramer, chunks, *limits, reset_each=reset_each)
    assert got == expected
    return got


def cuts(data: bytes, points: Sequence[int]) -> List[bytes]:
    points = sorted(set(p for p in points if 0 < p < len(data)))
    edges = [0] + points + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def random_cuts(data: bytes, rng: random.Random, pieces: int) -> List[bytes]:
    return cuts(data, [rng.randrange(1, max(2, len(data))) for _ in range(pieces)])


def w2_message() -> bytes:
    """The W2 call (echo of 100 small dicts with text keys), as sent."""
    from brokerpair import connected_pair

    from syncpb.flavors import Root

    class Echo(Root):
        def remote_echo(self, value: Any) -> Any:
            return value

    rng = random.Random(1)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

    def text(n: int) -> str:
        return "".join(rng.choice(letters) for _ in range(n))

    records = [{"id": i, "name": text(12), "score": rng.random() * 1000.0,
                "tags": [text(5), text(5), text(5)]} for i in range(100)]
    _, client = connected_pair(Echo())
    client.call(b"root", "echo", (records,))
    return client.data_to_send()


# -- the wiring


def test_the_compiled_framer_is_the_one_in_use() -> None:
    assert PyFramer.__module__ == "syncpb.banana"
    if speedups.pure_forced():
        assert banana.Framer is PyFramer
    else:
        assert banana.Framer is CFramer
        assert speedups.load("_cframer") is _cframer


def test_constants_agree_with_banana() -> None:
    assert _cframer.LONG_STRING == banana.LONG_STRING
    assert _cframer.SIZE_LIMIT == banana.SIZE_LIMIT
    assert _cframer.PREFIX_LIMIT == banana.PREFIX_LIMIT


def test_interface() -> None:
    framer = CFramer()
    assert (framer.size_limit, framer.prefix_limit) == (banana.SIZE_LIMIT, banana.PREFIX_LIMIT)
    framer = CFramer(100, 5)
    assert (framer.size_limit, framer.prefix_limit) == (100, 5)
    framer.size_limit, framer.prefix_limit = 7, 4  # settable, as on the pure class
    with pytest.raises(BananaError, match="string header of 8 exceeds the size limit 7"):
        framer.feed(b"\x08\x82")
    framer = CFramer()
    message = banana.encode([b"x" * 40000])
    assert framer.feed(message[:100]) is None
    records = framer.long_strings
    assert records == [(6, 40000)]
    framer.reset()  # a new list: the owner may keep the old one
    assert framer.long_strings == [] and records == [(6, 40000)]
    assert framer.feed(message) == len(message)


# -- whole messages, every split point, byte by byte


MESSAGES = [
    banana.encode([b"x" * 300, [1, 2, 3], 1.5]),
    banana.encode([]),
    banana.encode(b""),
    banana.encode(0),
    banana.encode(-(2 ** 31)),
    banana.encode(2 ** 400),
    banana.encode(-(2 ** 400)),
    banana.encode([[[[]]], [[], [b"a"]], 1.25, b"message", b"None"]),
    banana.encode([b"y" * 70000, 2, [b"z" * 33000, b"w" * 32767, b"v" * 32768]]),
    banana.encode([1.5] * 300),
    banana.encode([[i, b"k%d" % i, float(i)] for i in range(500)]),
    b"\x00" * 20 + b"\x05\x81",          # a non-canonical prefix (high zero digits)
    b"\x05" + b"\x00" * 63 + b"\x82" + b"abcde",  # 64 prefix bytes, value 5
]


@pytest.mark.parametrize("index", range(len(MESSAGES)))
def test_whole_and_every_split_point(index: int) -> None:
    message = MESSAGES[index]
    assert same([message])[-1][1] == len(message)
    for cut in range(1, len(message)) if len(message) < 3000 else range(1, len(message), 97):
        same([message[:cut], message[cut:]])


@pytest.mark.parametrize("index", range(len(MESSAGES)))
def test_byte_by_byte(index: int) -> None:
    message = MESSAGES[index]
    if len(message) > 5000:
        message = message[:5000]  # the start of it: byte-by-byte stays quick
    same([message[i:i + 1] for i in range(len(message))])


def test_three_way_splits_of_a_small_message() -> None:
    message = MESSAGES[0][:40] + MESSAGES[7]
    for a in range(1, len(message)):
        for b in range(a, len(message), 3):
            same([message[:a], message[a:b], message[b:]])


def test_w2_message_in_segments() -> None:
    message = w2_message()
    steps = same([message])
    assert steps[-1][1] == len(message)
    for size in (1, 7, 100, 1460, 4096):
        same([message[i:i + size] for i in range(0, len(message), size)])
    rng = random.Random(5)
    for _ in range(50):
        same(random_cuts(message, rng, rng.randrange(1, 30)))


def test_messages_back_to_back_with_trailing_data() -> None:
    stream = b"".join(MESSAGES) + MESSAGES[0][:9]
    same([stream])
    rng = random.Random(2)
    for _ in range(100):
        same(random_cuts(stream, rng, rng.randrange(1, 60)))
    same([stream[i:i + 1000] for i in range(0, len(stream), 1000)])


def test_without_reset_the_offsets_run_on() -> None:
    stream = b"".join(MESSAGES[:10])
    same([stream], reset_each=False)
    same([stream[i:i + 333] for i in range(0, len(stream), 333)], reset_each=False)


def test_other_buffer_types() -> None:
    message = MESSAGES[8]
    for kind in (bytearray, memoryview):
        pieces = [kind(message[i:i + 5000]) for i in range(0, len(message), 5000)]
        assert drive(CFramer, pieces) == drive(PyFramer, [bytes(p) for p in pieces])
        assert drive(CFramer, [kind(message)]) == drive(PyFramer, [message])


def test_empty_chunks() -> None:
    message = MESSAGES[0]
    for cut in range(len(message) + 1):
        same([b"", message[:cut], b"", b"", message[cut:], b""])


# -- bad input: same error class and message, at the same chunk


BAD = [
    b"\x88",                                   # bad type byte
    b"\x01\x80\xff",
    b"\x05\x9f",
    b"\x01" * 65 + b"\x81",                    # prefix too long
    b"\x01" * 64 + b"\x81",                    # exactly the limit: fine
    b"\x01" * 64 + b"\x88",                    # the limit, then a bad type
    b"\x00" * 70,
    b"\x80\x80\x80\x81\x02\x00\x00\x80",       # empty lists, an int, a list of 2
    b"\x01\x00\x00\x01\x82",                   # string header over the limit (2**21 + 1)
    b"\x00\x00\x00\x01\x80",                   # list header over the limit (2**21)
    b"\x7f" * 64 + b"\x82",                    # 448-bit string header
    b"\x7f" * 64 + b"\x80",                    # 448-bit list header
    b"\x7f" * 64 + b"\x81",                    # 448-bit integer: no limit applies
    b"\x7f" * 10 + b"\x84" + b"\x00" * 8,     # a float with a (meaningless) long prefix
    b"\x02\x80\x01\x80" + b"\x7f" * 12 + b"\x82",
]


@pytest.mark.parametrize("index", range(len(BAD)))
def test_bad_input_every_split(index: int) -> None:
    data = BAD[index] + MESSAGES[0]
    same([data])
    for cut in range(1, len(data)):
        same([data[:cut], data[cut:]])
    same([data[i:i + 1] for i in range(len(data))])


def test_errors_raised_at_the_same_place() -> None:
    steps = same([b"\x01" * 65 + b"\x81"])
    assert steps == [("error", BananaError, "prefix longer than 64 bytes", [])]
    steps = same([b"\x02\x80\x05\x81\x8a"])
    assert steps == [("error", BananaError, "invalid Banana type byte 0x8a", [])]
    steps = same([b"\x01\x00\x00\x01\x82"])
    assert steps == [("error", BananaError,
                      "string header of 2097153 exceeds the size limit 655360", [])]
    big = (2 ** 448 - 1)
    steps = same([b"\x7f" * 64 + b"\x80"])
    assert steps == [("error", BananaError,
                      f"list header of {big} exceeds the size limit 655360", [])]


LIMITS: List[Tuple[Any, ...]] = [
    (),
    (10, 4),
    (0, 1),
    (1, 0),
    (70000, 64),
    (2 ** 70, 64),        # a size limit over 64 bits
    (2 ** 63 - 1, 2 ** 70),
    (-1, -5),
    (100.5, 4.5),         # not ints: compared the Python way
    (1 << 20, 9),
    (1 << 20, 10),
]


@pytest.mark.parametrize("limits", LIMITS)
def test_limits(limits: Tuple[Any, ...]) -> None:
    rng = random.Random(repr(limits))
    inputs = MESSAGES[:8] + MESSAGES[11:] + BAD
    inputs = inputs + [banana.encode([b"q" * 80000]), b"\x7f" * 9 + b"\x82abc",
                       b"\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x01\x80" + b"\x81" * 3]
    for data in inputs:
        same([data], *limits)
        same([data[i:i + 1] for i in range(min(len(data), 400))], *limits)
        for _ in range(5):
            same(random_cuts(data, rng, rng.randrange(1, 8)), *limits)


# -- random and hostile bytes


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 300), max_size=8))
def test_random_bytes(data: bytes, points: List[int]) -> None:
    same([data])
    same(cuts(data, points))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"\x80", b"\x81", b"\x82", b"\x84", b"\x87", b"\x00", b"\x01",
                                 b"\x02", b"\x03", b"\x7f", b"\x88", b"\xff", b"a" * 9]),
                max_size=120),
       st.lists(st.integers(1, 400), max_size=10),
       st.sampled_from(LIMITS))
def test_token_soup(parts: List[bytes], points: List[int], limits: Tuple[Any, ...]) -> None:
    data = b"".join(parts)
    same([data], *limits)
    same(cuts(data, points), *limits)


Tree = Any
trees = st.recursive(
    st.one_of(st.binary(max_size=40), st.integers(-(2 ** 70), 2 ** 70),
              st.floats(allow_nan=False), st.sampled_from(list(banana.VOCABULARY[1:]))),
    lambda children: st.lists(children, max_size=6), max_leaves=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(trees, min_size=1, max_size=4), st.lists(st.integers(1, 2000), max_size=12))
def test_encoded_trees(values: List[Tree], points: List[int]) -> None:
    stream = b"".join(banana.encode(v) for v in values)
    steps = same(cuts(stream, points))
    assert [s for s in steps if s[0] == "error"] == []


def test_deep_nesting() -> None:
    data = b"\x01\x80" * 20000 + b"\x00\x80"
    steps = same([data])
    assert steps[-1][1] == len(data)
    same([data[i:i + 1460] for i in range(0, len(data), 1460)])
    framer = CFramer()
    assert framer.feed(data[:-2]) is None
    framer.reset()  # gives the deep array back; the framer still works
    assert framer.feed(data) == len(data)


def test_long_string_offsets_match_across_chunkings() -> None:
    message = MESSAGES[8]
    whole = drive(CFramer, [message])
    pieces = drive(CFramer, [message[i:i + 1460] for i in range(0, len(message), 1460)])
    assert whole[-1][2] == pieces[-1][2] == [(6, 70000), (70014, 33000), (135789, 32768)]


def test_split_messages_and_decoder_use_it() -> None:
    first, second = banana.encode([b"a", 1]), banana.encode([b"b" * 70000, 2])
    messages, rest = banana.split_messages(first + second + second[:9])
    assert messages == [first, second] and rest == second[:9]
    decoder = banana.Decoder()
    assert decoder.feed(first[:3]) == [] and decoder.feed(first[3:]) == [[b"a", 1]]
    assert isinstance(decoder._framer, banana.Framer)


# -- assembling a message's long strings from its chunks (the broker's piece path)


def reference_cut(chunks: List[bytes], long_strings: List[Tuple[int, int]]
                  ) -> Tuple[bytes, dict]:
    """banana.cut_long_strings as it was before it took whole chunks at once."""
    rest: List[Any] = []
    strings = {}
    views = [memoryview(chunk) for chunk in chunks]
    index, chunk_start, cut = 0, 0, 0
    position = 0
    for start, size in long_strings:
        for target, into_rest in ((start, True), (start + size, False)):
            parts = []
            while position < target:
                view = views[index]
                take = min(target, chunk_start + len(view)) - position
                parts.append(view[position - chunk_start:position - chunk_start + take])
                position += take
                if position == chunk_start + len(view):
                    chunk_start += len(view)
                    index += 1
            if into_rest:
                rest.extend(parts)
            else:
                strings[start - cut] = b"".join(parts)
                cut += size
    while index < len(views):
        rest.append(views[index][position - chunk_start:])
        chunk_start += len(views[index])
        position = chunk_start
        index += 1
    return b"".join(rest), strings


def test_cut_long_strings_matches_the_reference() -> None:
    rng = random.Random(9)
    message = MESSAGES[8]
    framer = CFramer()
    assert framer.feed(message) == len(message)
    records = framer.long_strings
    splits: List[List[bytes]] = [[message], [message[i:i + 1460]
                                             for i in range(0, len(message), 1460)]]
    splits += [random_cuts(message, rng, rng.randrange(1, 400)) for _ in range(60)]
    edges = [s for start, size in records for s in (start - 1, start, start + 1, start + size - 1,
                                                     start + size, start + size + 1)]
    splits += [cuts(message, [edge]) for edge in edges] + [cuts(message, edges)]
    splits += [[b""] + cuts(message, edges[:4]) + [b""]]
    for chunks in splits:
        rest, strings = banana.cut_long_strings(chunks, records)
        assert (rest, strings) == reference_cut(chunks, records)
        assert all(type(s) is bytes for s in strings.values())
    assert banana.cut_long_strings([message], []) == (message, {})
