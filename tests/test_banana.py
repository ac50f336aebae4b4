"""Banana: golden vectors, the three feeding modes, limits and bad input."""

from __future__ import annotations

import pytest

from syncpb import banana
from syncpb.errors import BananaError

from vectors import all_frames, scenario_names, stream

FRAMES = list(all_frames())


def _dialect_free(name: str, index: int) -> bool:
    """The first two frames of each scenario precede the dialect."""
    return index < 2


@pytest.mark.parametrize("name,index,frame", FRAMES, ids=[f"{n}-{i}" for n, i, _ in FRAMES])
def test_golden_frame_decodes_and_reencodes(name, index, frame):
    vocab = not _dialect_free(name, index)
    decoder = banana.Decoder(vocab=vocab)
    assert decoder.feed(frame["raw"]) == [frame["value"]]
    assert decoder.buffered == 0
    assert banana.encode(frame["value"], vocab=vocab) == frame["raw"]


@pytest.mark.parametrize("name", scenario_names())
@pytest.mark.parametrize("direction", ["c2s", "s2c"])
def test_golden_stream_fed_byte_by_byte(name, direction):
    data, values = stream(name, direction)
    decoder = banana.Decoder(vocab=True)
    out = []
    for i in range(len(data)):
        out.extend(decoder.feed(data[i:i + 1]))
    # The dialect frame is vocabulary-free, the rest may use vocabulary:
    # a vocab-enabled decoder reads both.
    assert out == values


@pytest.mark.parametrize("name", scenario_names())
def test_golden_stream_whole_with_trailing_data(name):
    data, values = stream(name, "s2c")
    decoder = banana.Decoder()
    partial = b"\x05\x80\x02"  # an unfinished list and an unfinished prefix
    assert decoder.feed(data + partial) == values
    assert decoder.buffered == len(partial)


@pytest.mark.parametrize("value,hexed", [
    (42, "2a81"), (0, "0081"), (128, "000181"), (-5, "0583"),
    (2**31 - 1, "7f7f7f7f0781"), (2**31, "000000000885"),
    (-2**31, "000000000883"), (-2**31 - 1, "010000000886"),
    (2**70, "00" * 10 + "0185"), (1.5, "843ff8000000000000"),
    (b"pb", "02827062"), (b"", "0082"), ([], "0080"),
    ([b"pb", b"none"], "02800282706204826e6f6e65"),
])
def test_canonical_encoding(value, hexed):
    assert banana.encode(value, vocab=False).hex() == hexed


def test_vocabulary_applies_to_any_bytes():
    assert banana.encode(b"list") == bytes.fromhex("0887")
    assert banana.encode(b"list", vocab=False) == b"\x04\x82list"


@pytest.mark.parametrize("data,value", [
    (bytes.fromhex("05000081"), 5),   # zero-padded prefix
    (b"\x81", 0), (b"\x82", b""), (b"\x80", []),  # empty prefixes
    (bytes.fromhex("0083"), 0),     # negative zero
    (bytes.fromhex("2a85"), 42),    # LONGINT for a small value
    (bytes.fromhex("0586"), -5),    # LONGNEG for a small value
    (b"\x01\x02\x84" + b"\x3f\xf8" + bytes(6), 1.5),  # prefix before FLOAT ignored
])
def test_decoder_is_lenient_like_twisted(data, value):
    assert banana.Decoder().feed(data) == [value]


def test_largest_and_too_large_integers():
    biggest = 2**448 - 1
    token = banana.encode(biggest)
    assert banana.Decoder().feed(token) == [biggest]
    with pytest.raises(BananaError):
        banana.encode(2**448)
    assert banana.encode(2**448, prefix_limit=65)  # a larger per-connection limit


@pytest.mark.parametrize("data,message", [
    (bytes(65), "prefix"),
    (b"\x88", "type byte"),
    (b"\xff", "type byte"),
    (banana.encode_prefix(655361) + b"\x82", "size limit"),
    (banana.encode_prefix(655361) + b"\x80", "size limit"),
    (b"\x00\x87", "vocabulary"),
    (b"\x20\x87", "vocabulary"),
])
def test_bad_streams_raise_banana_error(data, message):
    with pytest.raises(BananaError, match=message):
        banana.Decoder().feed(data)


def test_size_limit_is_per_decoder():
    header = banana.encode_prefix(655361) + b"\x82"
    decoder = banana.Decoder(size_limit=1 << 20)
    assert decoder.feed(header + bytes(655361)) == [bytes(655361)]
    assert banana.encode(bytes(655360))  # exactly the limit is allowed
    with pytest.raises(BananaError):
        banana.encode(bytes(655361))


def test_oversize_string_refused_before_payload_arrives():
    decoder = banana.Decoder()
    with pytest.raises(BananaError):
        decoder.feed(banana.encode_prefix(10**9) + b"\x82")


def test_vocab_token_refused_before_dialect():
    with pytest.raises(BananaError):
        banana.Decoder(vocab=False).feed(b"\x01\x87")


def test_deep_nesting_decodes_iteratively():
    depth = 5000
    data = b"\x01\x80" * depth + b"\x00\x80"
    value = banana.Decoder().feed(data)[0]
    for _ in range(depth):
        value = value[0]
    assert value == []


def test_framer_resumes_across_chunks():
    framer = banana.Framer()
    message = banana.encode([b"x" * 300, [1, 2, 3], 1.5])
    ends = [framer.feed(message[i:i + 1]) for i in range(len(message))]
    assert ends[:-1] == [None] * (len(message) - 1)
    assert ends[-1] == 1


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 300, 310])
def test_framer_reports_end_within_the_last_chunk(cut):
    message = banana.encode([b"x" * 300, [1, 2, 3], 1.5])
    framer = banana.Framer()
    assert framer.feed(message[:cut]) is None
    assert framer.feed(message[cut:] + b"\x05\x81") == len(message) - cut


def test_split_messages_keeps_the_unfinished_rest():
    first, second = banana.encode([b"a", 1]), banana.encode([b"b" * 70000, 2])
    messages, rest = banana.split_messages(first + second + second[:9])
    assert messages == [first, second] and rest == second[:9]
