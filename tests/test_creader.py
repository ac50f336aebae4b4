"""The compiled reader (syncpb._creader) against the pure one (syncpb.jellyreader).

Both readers are fed the same bytes with the same limits, allow-list and
context, and must agree exactly: equal values with the same types, the same
sharing and cycles, the same ``pos`` and ``depth`` afterwards, the same
calls into the context, or the same exception class and message. The inputs
are hypothesis-made values (whole, cut at every point, with trailing data),
random Banana trees with random heads, random token soups and bytes, the
recorded Twisted streams and mutations of them, and the W2 message through
a broker whole, in two pieces at every cut and byte by byte.

Skipped when the compiled module is not built, except under ``CI=true``.
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import math
import os
import random
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncpb
from syncpb import banana
from syncpb import broker as broker_module
from syncpb.jelly import SecurityOptions, Writer
from syncpb.jellybase import JellyError
from syncpb.jellyreader import Reader as PyReader

from test_properties_fuzz import mutated, values
from test_split_invariance import STREAMS as RECORDED, mutate
from test_split_invariance import run as run_broker
from vectors import stream

try:
    _creader: Any = importlib.import_module("syncpb._creader")
except ImportError as exc:  # not built
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"the compiled reader is not built ({exc})", allow_module_level=True)

CReader = _creader.Reader
READERS = (PyReader, CReader)
FAST = settings(deadline=None, max_examples=200,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- helpers

class Point(syncpb.RemoteCopy):
    def setCopyableState(self, state: Any) -> None:  # noqa: N802 - Twisted's name
        if state == b"boom":
            raise RuntimeError("refused")
        self.__dict__["state"] = state


class Cached(syncpb.RemoteCache):
    pass


REGISTRY = syncpb.UnjellyableRegistry()
REGISTRY.register(b"test.Point", Point)
REGISTRY.register(b"test.Cached", Cached)
REGISTRY.register_factory(b"test.Pair", lambda state: ("pair", state))


def failing_factory(state: Any) -> Any:
    if state == 0:
        raise IndexError("factory index")
    if state == 1:
        raise ValueError("factory value")
    return ("made", state)


def security(types: Optional[List[bytes]] = None) -> SecurityOptions:
    options = SecurityOptions(types, REGISTRY)
    options.register(b"test.Factory", failing_factory)
    return options


class Ctx:
    """A codec context recording every call (what the broker lends)."""

    def __init__(self) -> None:
        self.log: List[Any] = []

    def unjelly_remote(self, oid: int, reader: Any) -> Any:
        self.log.append(("remote", oid))
        reader.imported.append(oid)
        return ("remote", oid)

    def unjelly_local(self, oid: Any) -> Any:
        self.log.append(("local", canon(oid)))
        if oid == 13:
            raise JellyError("unknown local 13")
        return ("local", oid)

    def unjelly_cache(self, cls: type, cid: Any) -> Any:
        self.log.append(("cache", cls.__name__, canon(cid)))
        if type(cid) is not int:
            raise JellyError(f"cache id {cid!r} is not an integer")
        return cls.__new__(cls)

    def cache_filled(self, cid: int, first: Any) -> None:
        self.log.append(("filled", cid, canon(first)))

    def unjelly_cached(self, cid: Any) -> Any:
        self.log.append(("cached", canon(cid)))
        return ("cached", cid)

    def unjelly_lcache(self, cid: Any) -> Any:
        self.log.append(("lcache", canon(cid)))
        return ("lcache", cid)


def canon(value: Any) -> Any:
    """A comparable picture of a value graph: exact types, float bits, and
    containers numbered in the order first met (sharing and cycles show)."""
    seen: Dict[int, int] = {}

    def walk(item: Any) -> Any:
        kind = type(item)
        if kind is float:
            return ("float", repr(item), math.copysign(1.0, item) if not math.isnan(item) else 0)
        if item is None or kind in (bool, int, str, bytes, decimal.Decimal, datetime.datetime,
                                    datetime.date, datetime.time, datetime.timedelta):
            return (kind.__name__, repr(item))
        if id(item) in seen:
            return ("seen", seen[id(item)])
        seen[id(item)] = len(seen)
        if kind in (list, tuple, set, frozenset):
            return (kind.__name__, [walk(x) for x in item])
        if kind is dict:
            return ("dict", [(walk(k), walk(v)) for k, v in item.items()])
        if kind.__name__ == "_Pending":
            return ("pending", walk(item.items), item.missing)
        state = getattr(item, "__dict__", None)
        return (kind.__name__, walk(state) if state is not None else repr(item))

    return walk(value)


def outcome(cls: type, data: bytes, steps: List[Tuple[str, tuple]],
            vocab: bool = True, types: Optional[List[bytes]] = None,
            long_strings: Optional[Dict[int, bytes]] = None, start: int = 0,
            **limits: Any) -> List[Any]:
    """What reader class ``cls`` does with ``data``: each step's result (or
    its error, which ends the run), ``pos`` and ``depth`` after it, and the
    context's log."""
    ctx = Ctx()
    reader = cls(data, start, security(types), ctx, vocab, **limits)
    reader.long_strings = long_strings
    out: List[Any] = []
    for name, args in steps:
        try:
            result = getattr(reader, name)(*args)
        except Exception as exc:  # compared, not handled
            cause = exc.__cause__
            out.append(("error", type(exc).__name__, str(exc),
                        type(cause).__name__ if cause is not None else None,
                        reader.pos, reader.depth))
            break
        out.append(("ok", canon(result), reader.pos, reader.depth))
    out.append(("ctx", ctx.log, canon(reader.imported)))
    return out


def assert_same(data: bytes, steps: Optional[List[Tuple[str, tuple]]] = None,
                **options: Any) -> List[Any]:
    steps = steps if steps is not None else [("jelly", ())]
    pure = outcome(PyReader, data, steps, **options)
    compiled = outcome(CReader, data, steps, **options)
    assert compiled == pure, (data, options)
    return pure


STEP_SETS: List[List[Tuple[str, tuple]]] = [
    [("jelly", ()), ("jelly", ())], [("raw", ()), ("raw", ())], [("skip", ()), ("jelly", ())],
    [("header", ()), ("header", ()), ("header", ())], [("list_header", ()), ("raw", ())],
    [("raw_fields", (4,)), ("jelly", ())], [("value", ()), ("value", ())],
    [("raw_int", ()), ("raw_bytes", ())],
]
LIMITS: List[Dict[str, Any]] = [
    {}, {"size_limit": 126}, {"size_limit": 127}, {"size_limit": 3}, {"prefix_limit": 4},
    {"max_depth": 0}, {"max_depth": 1}, {"max_depth": 3},
    # the fast paths skip some depth checks, and are taken from size_limit 127 on
    {"size_limit": 127, "max_depth": 0}, {"size_limit": 126, "max_depth": 1},
    {"size_limit": 127, "max_depth": 2}, {"size_limit": 126, "max_depth": 0},
]
TYPE_SETS: List[Optional[List[bytes]]] = [
    None, [b"list", b"tuple", b"dictionary", b"reference", b"dereference"],
    [b"unicode", b"list", b"dictionary", b"None"], [], [b"unicode"],
]


def every_option(data: bytes) -> None:
    """``data`` read every way, under every limit and allow-list chosen here."""
    for vocab in (True, False):
        for steps in STEP_SETS:
            assert_same(data, steps, vocab=vocab)
        for limits in LIMITS:
            assert_same(data, vocab=vocab, **limits)
        for types in TYPE_SETS:
            assert_same(data, vocab=vocab, types=types)


def cut_points(length: int, most: int = 300) -> List[int]:
    if length <= most:
        return list(range(length))
    step = length // most + 1
    ends = set(range(0, 40)) | set(range(length - 40, length))
    return sorted(ends | set(range(0, length, step)))


# ---------------------------------------------------------------- values

@FAST
@given(values, st.booleans())
def test_values_whole_cut_anywhere_and_followed_by_more(value: Any, vocab: bool) -> None:
    data = Writer(vocab=vocab).jelly(value)
    result = assert_same(data, vocab=vocab)
    assert result[0][0] == "ok" and result[0][2] == len(data)
    assert_same(data + b"\x05\x81" + data, [("jelly", ()), ("jelly", ()), ("jelly", ())],
                vocab=vocab)
    for cut in cut_points(len(data)):
        assert_same(data[:cut], vocab=vocab)


@settings(FAST, max_examples=60)
@given(values)
def test_values_under_every_limit_and_allow_list(value: Any) -> None:
    every_option(Writer(vocab=True).jelly(value))
    every_option(Writer(vocab=False).jelly(value))


def test_w2_message_and_args() -> None:
    records = [{"id": i, "name": "n%011d" % i, "score": i * 1.5, "tags": ["ab", "cd", "é"]}
               for i in range(100)]
    data = Writer(vocab=True).jelly((records,))
    assert assert_same(data)[0][1] == canon((records,))
    every_option(data)
    for cut in cut_points(len(data), 2000):
        assert_same(data[:cut])


# ---------------------------------------------------------------- random trees

INTS = st.one_of(st.integers(-300, 300), st.sampled_from(
    [2**31, -(2**31), 2**63 - 1, 2**63, -(2**63), 2**64, 2**200, -(2**300), 10**12]))
TEXTS = st.sampled_from([b"", b"true", b"false", b"x", b"\xff\xfe", b"caf\xc3\xa9",
                         b"1 2 3", b"2024 1 2 3 4 5 6", b"2024 13 2", b"1 2", b"a b c",
                         b"unicode", b"test.Point", b"boom", b"x" * 130])
HEADS = st.sampled_from(sorted(syncpb.jelly.BASIC_TYPES) + [
    b"test.Point", b"test.Cached", b"test.Pair", b"test.Factory", b"test.Unknown",
    b"nodot", b"class", b"instance", b"module", b"function", b"copy", b"cache"])
LEAVES = st.one_of(INTS, TEXTS, st.floats(), st.just([]))


def head_lists(inner: Any) -> Any:
    return st.builds(lambda head, items: [head] + items, HEADS, st.lists(inner, max_size=4))


TREES = st.recursive(LEAVES, lambda inner: st.one_of(
    head_lists(inner), st.lists(inner, max_size=3),
    st.builds(lambda k, v: [b"dictionary", [k, v], [k, v]], inner, inner),
    st.builds(lambda n, v: [b"reference", n, v], st.integers(0, 3), inner),
    st.builds(lambda n: [b"dereference", n], st.integers(0, 3))), max_leaves=12)


@FAST
@given(TREES, st.booleans(), st.sampled_from(LIMITS), st.sampled_from(TYPE_SETS))
def test_random_banana_trees(tree: Any, vocab: bool, limits: Dict[str, Any],
                             types: Optional[List[bytes]]) -> None:
    data = banana.encode(tree, vocab=vocab)
    assert_same(data, vocab=vocab, types=types, **limits)
    assert_same(data, [("raw", ()), ("skip", ())], vocab=vocab, **limits)
    for cut in cut_points(len(data), 60):
        assert_same(data[:cut], vocab=vocab, types=types, **limits)


TOKENS = [
    b"\x00\x80", b"\x01\x80", b"\x02\x80", b"\x03\x80", b"\x7f\x80", b"\x01\x02\x80",
    b"\x08\x87", b"\x0b\x87", b"\x05\x87", b"\x01\x87", b"\x04\x87", b"\x03\x87", b"\x00\x87",
    b"\x7f\x7f\x87", b"\x20\x87", b"\x07\x82unicode", b"\x02\x80\x07\x82unicode",
    b"\x02\x80\x02\x80\x07\x82unicode", b"\x01\x82a", b"\x02\x82\xc3\xa9", b"\x01\x82\xff",
    b"\x04\x82true", b"\x0a\x82dictionary", b"\x04\x82list", b"\x05\x82tuple",
    b"\x0a\x82test.Point", b"\x0b\x82test.Cached", b"\x09\x82reference",
    b"\x0b\x82dereference", b"\x04\x82None", b"\x05\x81", b"\x01\x02\x81", b"\x01\x02\x03\x81",
    b"\x01\x02\x03\x04\x81", b"\x7f" * 10 + b"\x81", b"\x7f" * 12 + b"\x83",
    b"\x7f" * 70 + b"\x85",
    b"\x05\x83", b"\x81", b"\x83", b"\x84" + b"\x3f\xf0" + b"\x00" * 6, b"\x01\x84" + b"\x00" * 8,
    b"\x84\x7f\xf8\x00\x00\x00\x00\x00\x01", b"\x88", b"\xff", b"\x00\x80\x00\x80",
    banana.encode_prefix(2**60) + b"\x80", banana.encode_prefix(10**12) + b"\x82",
    banana.encode_prefix(200) + b"\x82", banana.encode_prefix(640 * 1024 + 1) + b"\x80",
]
SOUPS = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=3)),
                 max_size=25).map(b"".join)


@settings(FAST, max_examples=400)
@given(SOUPS, st.booleans(), st.sampled_from(STEP_SETS), st.sampled_from(LIMITS))
def test_random_token_soups(data: bytes, vocab: bool, steps: List[Tuple[str, tuple]],
                            limits: Dict[str, Any]) -> None:
    assert_same(data, steps, vocab=vocab, **limits)
    assert_same(data, vocab=vocab, **limits)


@settings(FAST, max_examples=300)
@given(st.binary(max_size=60), st.booleans(), st.sampled_from(STEP_SETS))
def test_random_bytes(data: bytes, vocab: bool, steps: List[Tuple[str, tuple]]) -> None:
    assert_same(data, steps, vocab=vocab)


@settings(FAST, max_examples=100)
@given(mutated(), st.booleans())
def test_mutated_twisted_streams(data: bytes, vocab: bool) -> None:
    assert_same(data, [("jelly", ())] * 8, vocab=vocab)
    assert_same(data, [("raw", ())] * 8, vocab=vocab)


# ---------------------------------------------------------------- chosen cases

CASES = [
    # the dictionary pair fast path cut right after its head: the pure reader's
    # bare IndexError (JellyError "malformed value" outside the fast path)
    b"\x02\x80\x0a\x82dictionary\x02\x80\x02\x80\x07\x82unicode",
    b"\x02\x80\x0a\x82dictionary\x02\x80\x02\x80\x07\x82unicode\x01",
    b"\x02\x80\x05\x87\x02\x80\x02\x80\x07\x82unicode",
    b"\x02\x80\x08\x87\x02\x80\x0a\x82dictionary\x02\x80\x02\x80\x07\x82unicode",
    b"\x02\x80\x05\x87\x02\x80\x02\x80\x07\x82unicode\x01\x82\xff\x01\x81",  # bad UTF-8 key
    b"\x02\x80\x07\x82unicode\x01\x82\xff",
    b"\x02\x80\x07\x82unicode\x01\x02\x82" + b"x" * 129,
    b"\x02\x80\x07\x82unicode\x02\x80",  # unicode of a list
    b"\x01\x80\x04\x82None", b"\x02\x80\x04\x82None\x01\x81",
    b"\x02\x80\x07\x82boolean\x04\x82true", b"\x02\x80\x07\x82boolean\x03\x82yes",
    b"\x01\x80\x05\x87", b"\x01\x80\x08\x87", b"\x01\x80\x0b\x87",
    b"\x02\x80\x05\x87\x01\x81",  # a dictionary item that is not a pair
    b"\x02\x80\x05\x87\x02\x80\x00\x80\x01\x81",  # an unhashable key
    b"\x02\x80\x05\x87\x02\x80\x02\x80\x03\x87\x01\x81\x01\x81",  # a pending key
    b"\x02\x80\x05\x82tuple\x00\x80", b"\x01\x80\x00\x82", b"\x01\x80\x05\x81",
    b"\x02\x80\x03\x82set\x02\x80\x08\x87\x01\x81",  # unhashable set member
    b"\x03\x80\x07\x82decimal\x05\x81\x02\x83", b"\x03\x80\x07\x82decimal\x05\x82x",
    b"\x02\x80\x08\x82datetime\x102024 1 2 3 4 5 6", b"\x02\x80\x04\x82date\x092024 13 2",
    b"\x02\x80\x04\x82time\x071 2 3 4", b"\x02\x80\x09\x82timedelta\x051 2 3",
    b"\x02\x80\x09\x82timedelta\x0e99999999999 0 0",
    b"\x02\x80\x0c\x87\x03\x82why", b"\x02\x80\x0a\x87\x03\x81",
    b"\x02\x80\x10\x87\x05\x81", b"\x02\x80\x10\x87\x01\x82x", b"\x02\x80\x11\x87\x0d\x81",
    b"\x02\x80\x11\x87\x05\x81", b"\x02\x80\x0f\x87\x05\x81", b"\x02\x80\x12\x87\x05\x81",
    b"\x03\x80\x0b\x82test.Cached\x05\x81\x02\x80\x05\x87\x00\x80",
    b"\x03\x80\x0b\x82test.Cached\x01\x82x\x01\x81",
    b"\x02\x80\x0a\x82test.Point\x04\x82boom", b"\x02\x80\x0a\x82test.Point\x01\x81",
    b"\x02\x80\x09\x82test.Pair\x01\x81", b"\x02\x80\x0c\x82test.Factory\x00\x81",
    b"\x02\x80\x0c\x82test.Factory\x01\x81", b"\x02\x80\x0c\x82test.Factory\x05\x81",
    b"\x02\x80\x08\x87\x02\x80\x0c\x82test.Factory\x00\x81",  # IndexError under a fast head
    b"\x02\x80\x0c\x82test.Unknown", b"\x01\x80\x04\x82nope", b"\x01\x80\x03\x80",
    b"\x03\x80\x04\x87\x01\x81\x02\x80\x08\x87\x02\x80\x03\x87\x01\x81",  # list holding itself
    b"\x03\x80\x04\x87\x01\x81\x02\x80\x0b\x87\x02\x80\x03\x87\x01\x81",  # tuple holding itself
    b"\x03\x80\x04\x87\x01\x81\x02\x80\x03\x87\x01\x81",  # refers to itself
    b"\x02\x80\x03\x87\x05\x81",  # never defined
    b"\x03\x80\x08\x87\x03\x80\x04\x87\x01\x81\x01\x81\x03\x80\x04\x87\x01\x81\x01\x81",
    b"\x03\x80\x04\x87\x01\x82x\x01\x81", b"\x02\x80\x03\x87\x01\x82x",
    b"\x03\x80\x04\x87\x01\x81\x02\x80\x07\x82unicode\x01\x82a",
    b"\x02\x80\x0b\x87\x02\x80\x08\x87\x03\x80\x04\x87\x01\x81\x02\x80\x0b\x87\x02\x80\x03\x87"
    b"\x01\x81",
    b"\x7f" * 64 + b"\x81", b"\x7f" * 65 + b"\x81", b"\x00" * 20 + b"\x81",
    b"\x7f" * 9 + b"\x81", b"\x7f" * 9 + b"\x01\x81", b"\x7f" * 9 + b"\x00\x83",
    b"\x7f" * 9 + b"\x01\x80", b"\x7f" * 9 + b"\x01\x87",
    b"\x20\x87", b"\x00\x87", b"\x88", b"\x05",
]


@pytest.mark.parametrize("data", CASES)
def test_chosen_cases(data: bytes) -> None:
    every_option(data)
    for cut in range(len(data)):
        assert_same(data[:cut])
        assert_same(data[:cut], vocab=False)


def test_w2_whole_in_two_pieces_and_byte_by_byte_through_a_broker(monkeypatch) -> None:
    records = [{"id": i, "name": "n%011d" % i, "score": i * 1.5, "tags": ["ab", "cd", "é"]}
               for i in range(100)]
    server, client = syncpb.broker.Broker(), syncpb.broker.Broker(is_client=True)
    client.receive_data(server.data_to_send())
    hello = client.data_to_send()
    client.call(b"root", "echo", (records,), {"k": (1, None, True)})
    data = hello + client.data_to_send()
    results = {}
    for cls in READERS:
        monkeypatch.setattr(broker_module, "Reader", cls)
        whole = run_broker(data, [len(data)], False)
        assert run_broker(data, [1] * len(data), False) == whole
        for cut in cut_points(len(data), 150):
            if cut:
                assert run_broker(data, [cut, len(data)], False) == whole
        results[cls] = whole
    assert results[CReader] == results[PyReader]


@pytest.mark.parametrize("name,direction", RECORDED)
def test_recorded_streams_through_a_broker(monkeypatch, name: str, direction: str) -> None:
    data, _ = stream(name, direction)
    rng = random.Random(name + direction)
    inputs = [data] + [mutate(rng, data) for _ in range(20)]
    for sample in inputs:
        seen = []
        for cls in READERS:
            monkeypatch.setattr(broker_module, "Reader", cls)
            seen.append((run_broker(sample, [max(len(sample), 1)], direction == "s2c"),
                         run_broker(sample, [1] * len(sample), direction == "s2c")))
        assert seen[0] == seen[1]


# ---------------------------------------------------------------- the interface

def test_long_strings_are_taken_from_the_side_table() -> None:
    size = banana.LONG_STRING
    value = [b"a" * size, "b" * size, {"c" * size: b"d" * (size + 1)}]
    full = Writer().jelly(value)
    spans = [(full.index(text), len(text))
             for text in (b"a" * size, b"b" * size, b"c" * size, b"d" * (size + 1))]
    data, table = banana.cut_long_strings([full], spans)
    assert len(data) < 100 and len(table) == 4
    for steps in STEP_SETS:
        assert_same(data, steps, long_strings=table)
    assert assert_same(data, long_strings=table)[0][1] == canon(value)
    assert assert_same(data, [("skip", ())], long_strings=table)[0][2] == len(data)


def test_restart_reuses_a_reader_and_keeps_nothing() -> None:
    first = Writer().jelly([{"a": 1}, (2, 3)])
    second = Writer().jelly("two")
    for cls in READERS:
        reader = cls(b"", 0, security(), Ctx(), True)
        reader.imported.append(1)
        reader.context = "perspective"
        reader.restart(first, 0, security(), None)
        assert (reader.context, reader.imported, reader.pos, reader.start) == (None, [], 0, 0)
        assert reader.jelly() == [{"a": 1}, (2, 3)] and reader.pos == len(first)
        reader.restart(b"xx" + second, 2, security([b"list"]), {5: b"x"})
        assert (reader.pos, reader.start, reader.long_strings) == (2, 2, {5: b"x"})
        with pytest.raises(syncpb.InsecureJelly):  # the new allow-list counts
            reader.jelly()
        reader.pos = reader.start
        reader.skip()
        assert reader.pos == len(second) + 2
        assert reader.buf == b"xx" + second


def test_attributes_and_constructor_checks() -> None:
    for cls in READERS:
        with pytest.raises(ValueError, match="prefix_limit"):
            cls(b"", 0, SecurityOptions(), prefix_limit=3)
        reader = cls(b"\x05\x81", 0, SecurityOptions(), None, False, 100, 10, 7)
        assert (reader.size_limit, reader.prefix_limit, reader.max_depth) == (100, 10, 7)
        assert (reader.vocab, reader.ctx, reader.depth) == (False, None, 0)
        assert reader.long_strings is None
        assert reader.raw_int() == 5
        reader.pos = 0
        with pytest.raises(syncpb.ProtocolError, match="expected a byte string, got int"):
            reader.raw_bytes()
        assert reader.raw_fields(0) == []
    assert isinstance(syncpb.jelly.PyReader(b"", 0, SecurityOptions()), PyReader)
    with pytest.raises(ValueError, match="negative"):
        CReader(b"", 0, SecurityOptions()).pos = -1


def test_a_context_hook_that_restarts_the_reader_does_not_crash_it() -> None:
    class Restarting(Ctx):
        def unjelly_remote(self, oid: int, reader: Any) -> Any:
            reader.restart(b"\x01\x81", 0, security(), None)
            return oid

    data = Writer().jelly([1, 2, 3]).replace(b"\x02\x81", b"\x02\x80\x10\x87\x02\x81")
    reader = CReader(data, 0, security(), Restarting(), True)
    assert reader.jelly() == [1, 2, 1]  # the rest is read from the new buffer


def test_deep_nesting_meets_the_depth_limit_or_a_recursion_error() -> None:
    deep = b"\x02\x80\x08\x87" * 3000 + b"\x01\x81"
    raw_deep = b"\x01\x80" * 3000 + b"\x00\x80"
    assert_same(deep)
    assert_same(raw_deep, [("raw", ())])
    # Beyond Python's recursion limit both raise RecursionError (the broker
    # reports it as "value nested too deeply"), if not at the same level:
    # the compiled reader must not overflow the C stack instead.
    for cls in READERS:
        reader = cls(deep, 0, SecurityOptions(), None, True, max_depth=10**6)
        with pytest.raises(RecursionError):
            reader.jelly()
        assert reader.depth == 0
        reader = cls(raw_deep, 0, SecurityOptions(), None, True, max_depth=10**6)
        with pytest.raises(RecursionError):
            reader.raw()


def test_selection_follows_syncpb_pure() -> None:
    import subprocess

    code = "import syncpb.jelly as j; print(j.Reader.__module__)"
    env = dict(os.environ, SYNCPB_PURE="1")
    pure = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, check=True)
    assert pure.stdout.strip() == "syncpb.jellyreader"
    env["SYNCPB_PURE"] = "0"
    compiled = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parent.parent, check=True)
    assert compiled.stdout.strip() == "syncpb._creader"
