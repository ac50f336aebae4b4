"""The compiled writer (``syncpb._cwriter.Writer``) against the pure-Python
reference (``syncpb.jelly.PyWriter``), on the same inputs.

For every value both writers encode, the joined bytes, ``wrote_large`` and,
when encoding fails, the exception's class and message must be identical;
the writer must then go on encoding as if nothing happened. The inputs are
random value graphs with shared and cyclic containers (both dialects), the
boundaries of every token (ints, string and piece sizes, limits), the
public methods the broker and its context hooks call (``word``,
``int_token``, ``list_header``, ``begin_shared``, ``shared``,
``copy_form``, ``cache_form``), context hooks that write shared objects
at the very place their first item starts, and whole PB conversations
(references, copies, caches, failures) run on two broker pairs, one per
writer. The compiled writer's messages must also decode the same whole,
split at every point and byte by byte.

The module skips when the extension is not built, except under CI=true,
where that is a failure. It imports the extension directly, so it also runs
under SYNCPB_PURE=1.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import gc
import itertools
import os
import sys
from collections import OrderedDict
from typing import Any, Callable, List, Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import syncpb
from syncpb import banana, broker as broker_module, wirefailure
from syncpb.broker import AnswerReceived, Broker, CallReceived, ErrorReceived
from syncpb.errors import BananaError
from syncpb.jelly import PyWriter, Reader, SecurityOptions, Unpersistable

from brokerpair import run_calls
from test_properties_fuzz import BOUNDARY_INTS, INT_LIMIT, fuzz, values

try:
    from syncpb import _cwriter
except ImportError as exc:  # not built
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"syncpb._cwriter is not built ({exc})", allow_module_level=True)

CWriter = _cwriter.Writer
LARGE = 4096  # jellywriter._LARGE_PIECE

Outcome = Tuple[Any, ...]


def outcome(writer: Any, action: Callable[[Any, List[bytes]], Any]) -> Outcome:
    """What ``action(writer, out)`` did: its result, the joined bytes and
    ``wrote_large``, or the exception's class and message."""
    out: List[bytes] = []
    writer.wrote_large = False
    try:
        result = action(writer, out)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return ("error", type(exc), str(exc))
    return ("ok", result, b"".join(out), writer.wrote_large)


def both(action: Callable[[Any, List[bytes]], Any], *args: Any, **kwargs: Any) -> Outcome:
    """Run ``action`` on a pure and a compiled writer made with the same
    arguments; assert the outcomes agree and that both writers go on as
    before afterwards; return the outcome."""
    pure, compiled = PyWriter(*args, **kwargs), CWriter(*args, **kwargs)
    expected = outcome(pure, action)
    assert outcome(compiled, action) == expected
    after = [1, "after", {"x": [2.5]}]
    assert outcome(compiled, write(after)) == outcome(pure, write(after))
    return expected


def write(value: Any) -> Callable[[Any, List[bytes]], Any]:
    return lambda writer, out: writer.write(value, out)


# ---------------------------------------------------------------- values

@fuzz(400)
@given(values, st.booleans())
def test_any_value_graph_gives_the_same_bytes(value: Any, vocab: bool) -> None:
    result = both(write(value), None, vocab)
    assert result[0] == "ok"


@fuzz(150)
@given(st.lists(values, max_size=4), st.booleans())
def test_call_arguments_give_the_same_bytes(items: List[Any], vocab: bool) -> None:
    both(lambda writer, out: writer.write_items(b"tuple", tuple(items), out), None, vocab)


@pytest.mark.parametrize("vocab", [True, False])
@pytest.mark.parametrize("value", [
    None, True, False, 0, -0.0, float("nan"), float("inf"), 1e300, "", b"", "é", "\U0001f600",
    "None", b"None", "unicode", b"unpersistable", "not_logged_in", "x" * 127, "x" * 128,
    b"y" * 16383, b"y" * 16384, [], (), {}, set(), frozenset(), [[[]]], ((),), {(): ()},
    {"None": None, b"list": [1], 3: "tuple", 2.5: (1,), None: frozenset({1})},
    decimal.Decimal("-1.50"), decimal.Decimal(0), datetime.datetime(2024, 2, 29, 1, 2, 3, 4),
    datetime.date(1, 1, 1), datetime.time(23, 59, 59, 999999), datetime.timedelta(-1, 5, 6),
    Unpersistable("gone"), [Unpersistable("é" * 50)] * 2,
] + BOUNDARY_INTS + [-n for n in BOUNDARY_INTS] + [INT_LIMIT - 1, -(INT_LIMIT - 1)])
def test_each_kind_gives_the_same_bytes(value: Any, vocab: bool) -> None:
    assert both(write(value), None, vocab)[0] == "ok"
    assert both(write([value, value, (value,)]), None, vocab)[0] == "ok"
    assert both(lambda w, out: w.value(value, out), None, vocab)[0] == "ok"


@pytest.mark.parametrize("size", [0, 1, 127, 128, 4000, 4063, 4064, 4080, 4081, 4082, 4083,
                                  4084, 4085, 4095, 4096, 4097, 16383, 16384, 70000])
@pytest.mark.parametrize("char", ["a", "é", "\u20ac", "\U0001f600"])
def test_strings_around_the_large_piece_size(size: int, char: str) -> None:
    text = char * (size // len(char.encode("utf-8")))
    for vocab in (True, False):
        assert both(write(text), None, vocab)[0] == "ok"
        assert both(write({text: [text]}), None, vocab)[0] == "ok"
    data = (char * size).encode("utf-8")[:size]
    assert both(write([data, data]), None, True)[0] == "ok"


def test_large_bytes_are_pieces_of_their_own() -> None:
    payload, small = b"p" * LARGE, b"q" * (LARGE - 1)
    out: List[bytes] = []
    writer = CWriter()
    writer.write_items(b"tuple", ([payload, small, payload], "x"), out)
    assert sum(piece is payload for piece in out) == 2
    assert not any(piece is small for piece in out)
    assert writer.wrote_large
    assert b"".join(out) == b"".join(
        _pure_pieces(lambda w, o: w.write_items(b"tuple", ([payload, small, payload], "x"), o)))
    small_only: List[bytes] = []
    writer.wrote_large = False
    writer.write([small, "s" * 4000, 2**70], small_only)
    assert len(small_only) == 1 and not writer.wrote_large  # one piece, nothing large


def _pure_pieces(action: Callable[[Any, List[bytes]], Any]) -> List[bytes]:
    out: List[bytes] = []
    action(PyWriter(), out)
    return out


def test_values_outside_a_serialisation_number_like_the_pure_writer() -> None:
    shared = [1]

    def twice(writer: Any, out: List[bytes]) -> None:
        writer.value(shared, out)
        writer.value((shared,), out)
        writer.value(shared, out)

    both(twice)
    both(lambda writer, out: (twice(writer, out), writer.write(shared, out)))


def test_out_may_be_any_list_like() -> None:
    class Pieces(list):
        pass

    shared: List[Any] = []
    shared.append(shared)
    pure, compiled = Pieces(), Pieces()
    PyWriter().write([shared, b"z" * LARGE, shared], pure)
    CWriter().write([shared, b"z" * LARGE, shared], compiled)
    assert b"".join(compiled) == b"".join(pure)


def _indexed(count: int, blob_between: bool) -> dict:
    """Records listed once and indexed again by number: every record is a
    shared container, numbered at its second sighting."""
    records = [{"n": n, "tags": [n, "t"]} for n in range(count)]
    value: dict = {"records": records}
    if blob_between:  # the records' piece is flushed before the index is written
        value["blob"] = b"b" * LARGE
    value["by_n"] = {record["n"]: record for record in records}
    value["tags"] = [record["tags"] for record in records[::-3]]
    return value


@pytest.mark.parametrize("blob_between", [False, True])
@pytest.mark.parametrize("vocab", [True, False])
def test_many_shared_containers_seen_again_later(blob_between: bool, vocab: bool) -> None:
    # Thousands of reference headers for one piece: in the buffer, or all
    # for a piece flushed already (put in when the call returns).
    assert both(write(_indexed(3000, blob_between)), None, vocab)[0] == "ok"


def test_headers_for_a_flushed_piece_go_past_the_ones_it_has() -> None:
    # a's header is put in when its piece is flushed (before the blob); b's
    # and c's come after, for that same piece, and land around a's; d's
    # piece is flushed last; e is first seen after a blob and again in a
    # third piece.
    a, b, c, d, e = [1], [2, [3]], (4,), {"d": 5}, [6]
    blob = b"x" * LARGE
    for value in ([a, b, c, a, blob, c, d, b, d, {"again": a}],
                  [[a, [b, c]], a, blob, e, blob, [c, b], e, [b[1]]],
                  [b, b[1], blob, b[1], blob, b, blob, d, d]):
        for vocab in (True, False):
            assert both(write(value), None, vocab)[0] == "ok"
            assert both(lambda w, out, v=value: w.write_items(b"list", v, out), None, vocab)[0] == "ok"


# ---------------------------------------------------------------- shared and cyclic

def _graphs() -> List[Any]:
    a: List[Any] = [1]
    b: dict = {"a": a}
    a.append(b)
    t = (a, b)
    loop: List[Any] = []
    loop.append(loop)
    inner = [2]
    outer = [inner, inner]
    return [
        [a, a], [a, b, t, t, a], [t, [t, (t,)]], loop, [loop, loop], {1: loop, 2: [loop]},
        [outer, inner, outer], [inner, outer], {"k": {"v": inner}, "w": inner},
        [frozenset({(1, 2)}), (1, 2)], [b, [b, [b]]],
    ]


@pytest.mark.parametrize("index", range(len(_graphs())))
@pytest.mark.parametrize("vocab", [True, False])
def test_shared_and_cyclic_containers(index: int, vocab: bool) -> None:
    assert both(write(_graphs()[index]), None, vocab)[0] == "ok"


class Wrapper:
    """An object a context writes as its inner list, with no header of its
    own: the two start at the same place, so their reference headers (if
    both are seen again) must nest in the right order."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner


class Tagged:
    def __init__(self, state: Any) -> None:
        self.state = state


class Hooks:
    """A context like the broker's: copies, caches and wrappers."""

    def jelly_object(self, obj: Any, writer: Any, out: List[bytes]) -> bool:
        if type(obj) is Wrapper:
            if writer.begin_shared(obj, out):
                writer.value(obj.inner, out)
            return True
        if type(obj) is Tagged:
            if isinstance(obj.state, int):
                writer.cache_form(b"cache.tag", obj.state, [obj.state], obj, out)
            else:
                writer.copy_form(b"copy.tag", obj.state, obj, out)
            return True
        if type(obj) is Unsendable:
            out.append(b"\x02\x80" + writer.word(b"remote") + writer.int_token(7))
            return True
        return False


class Unsendable:
    pass


def _hooked() -> List[Any]:
    inner = [1, 2]
    w = Wrapper(inner)
    ww = Wrapper(w)
    c = Tagged({"me": None})
    c.state["me"] = c
    k = Tagged(5)
    return [
        [w, w, inner], [w, inner, w], [inner, w, w], [w, inner, inner, w],
        [ww, w, inner, ww], [inner, w, ww, ww], [ww, ww, w, inner, inner],
        [c, c, {"c": c}], [k, k, [k]], [Unsendable(), w, Unsendable(), w],
        [Tagged(b"x" * LARGE), Tagged([w]), w, inner, ww],
        (w, [inner, (w, inner)], {"x": ww}), [Tagged(Tagged(Tagged(inner))), inner],
    ]


@pytest.mark.parametrize("index", range(len(_hooked())))
@pytest.mark.parametrize("vocab", [True, False])
def test_context_hooks_and_headers_at_the_same_place(index: int, vocab: bool) -> None:
    assert both(write(_hooked()[index]), Hooks(), vocab)[0] == "ok"
    assert both(lambda w, out: w.write_items(b"list", _hooked()[index], out), Hooks(), vocab)


def test_shared_reports_only_this_serialisation() -> None:
    seen: List[Tuple[bool, bool]] = []
    inner = [0]

    class Look:
        def jelly_object(self, obj: Any, writer: Any, out: List[bytes]) -> bool:
            seen.append((writer.shared(inner), writer.shared(obj)))
            out.append(writer.word(b"None"))
            return True

    thing = Unsendable()
    for cls in (PyWriter, CWriter):
        writer = cls(Look())
        writer.write([thing, inner, thing], [])
        writer.write([thing], [])
    assert seen[:3] == seen[3:] == [(False, False), (True, False), (False, False)]


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("limit", [0, 1, 5, 127, 128, 200, 4096, 5000, 640 * 1024])
def test_size_limit(limit: int) -> None:
    for value in (b"s" * 130, "s" * 130, "é" * 100, b"b" * 5000, "t" * 5000, [0] * 150,
                  {i: i for i in range(130)}, tuple(range(200)), set(range(140)),
                  [b"list", "None", [], {}], b"d" * (640 * 1024 + 1), 5):
        for vocab in (True, False):
            both(write(value), None, vocab, limit)
            both(write([1, value]), None, vocab, limit)
    for count in (0, 1, 126, 127, 128, 129, 5000):
        both(lambda w, out: w.list_header(count), None, True, limit)
        both(lambda w, out: w.write_items(b"tuple", (0,) * count, out), None, True, limit)


@pytest.mark.parametrize("limit", [-1, 0, 1, 2, 3, 4, 5, 9, 10, 64])
def test_prefix_limit(limit: int) -> None:
    for n in BOUNDARY_INTS + [1, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30, -(10**30)]:
        for value in (n, -n, [n], {"k": n}):
            both(write(value), None, True, banana.SIZE_LIMIT, limit)
        both(lambda w, out: w.int_token(n), None, True, banana.SIZE_LIMIT, limit)


def test_limits_that_are_not_ints_are_compared_the_python_way() -> None:
    for size_limit, prefix_limit in ((130.5, 64), (10**30, 3.5), (-(10**30), 10**30)):
        for value in (b"x" * 130, b"x" * 131, [0] * 130, 2**40, -5, "é" * 70):
            both(write(value), None, True, size_limit, prefix_limit)


class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    pass


@pytest.mark.parametrize("value", [
    object(), Colour.RED, Text("x"), OrderedDict(a=1), bytearray(b"x"), memoryview(b"x"),
    decimal.Decimal("NaN"), decimal.Decimal("-Infinity"),
    datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    datetime.time(1, tzinfo=datetime.timezone.utc), "\ud800", {"\udfff": 1}, {1: "a\ud800"},
    INT_LIMIT, -INT_LIMIT, 10**200, [1, "ok", {"deep": [object()]}], complex(1, 2),
])
def test_values_without_a_form_fail_the_same_way(value: Any) -> None:
    for ctx in (None, Hooks()):
        assert both(write(value), ctx)[0] == "error"
        assert both(write([value]), ctx)[0] == "error"
        assert both(lambda w, out: w.write_items(b"tuple", (1, value), out), ctx)[0] == "error"


def test_public_methods_fail_the_same_way() -> None:
    for action in (
        lambda w, out: w.write_items(b"nosuchhead", (), out),
        lambda w, out: w.write_items(b"tuple", 5, out),
        lambda w, out: w.word("text"),
        lambda w, out: w.word(None),
        lambda w, out: w.word(bytearray(b"None")),
        lambda w, out: w.int_token(1.5),
        lambda w, out: w.int_token("1"),
        lambda w, out: w.list_header("3"),
    ):
        both(action)
        both(action, None, False, 3)


@pytest.mark.parametrize("vocab", [True, False])
def test_public_methods_give_the_same_tokens(vocab: bool) -> None:
    for word in list(banana.VOCABULARY) + [b"x" * 127, b"x" * 128, b"x" * 20000, b"Non",
                                          b"dereferences"]:
        both(lambda w, out: w.word(word), None, vocab)
        both(lambda w, out: w.word(word), None, vocab, 200)
    for n in BOUNDARY_INTS + [True, False, 2**64, -(2**64), 2**447]:
        both(lambda w, out: w.int_token(n), None, vocab)
    for count in (0, 1, 127, 128, 16384, 640 * 1024, 640 * 1024 + 1):
        both(lambda w, out: w.list_header(count), None, vocab)


def test_nesting_too_deep_fails_the_same_way() -> None:
    for kind in (list, tuple, dict):
        value: Any = []
        for _ in range(3 * sys.getrecursionlimit()):
            value = kind([value]) if kind is not dict else {1: value}
        error = both(write(value))
        assert error[:3] == ("error", BananaError, "value nested too deeply to send")
        both(lambda w, out: w.write_items(b"tuple", (value,), out))
        shallow: Any = []
        for _ in range(sys.getrecursionlimit() // 5):
            shallow = kind([shallow]) if kind is not dict else {1: shallow}
        assert both(write(shallow))[0] == "ok"


def test_nesting_limits_are_about_the_same() -> None:
    def deepest(cls: Any) -> int:
        low, high = 1, 4 * sys.getrecursionlimit()
        while low < high:  # the deepest list nesting that can be written
            middle = (low + high + 1) // 2
            value: Any = 0
            for _ in range(middle):
                value = [value]
            try:
                cls().jelly(value)
            except BananaError:
                high = middle - 1
            else:
                low = middle
        return low

    assert abs(deepest(CWriter) - deepest(PyWriter)) <= 3


def test_changing_a_container_while_it_is_written_fails_the_same_way() -> None:
    class Grow:
        def __init__(self, target: Any) -> None:
            self.target = target

    class Mutate:
        def jelly_object(self, obj: Any, writer: Any, out: List[bytes]) -> bool:
            target = obj.target
            if type(target) is dict:
                target[len(target) + 100] = 0
            elif type(target) is set:
                target.add(len(target) + 100)
            else:
                target.append(0)
            out.append(writer.word(b"None"))
            return True

    def grown(kind: Any) -> Any:
        value = kind()
        item = Grow(value)
        if kind is dict:
            value.update({1: item, 2: 3})
        elif kind is set:
            value.update({item, 2})
        else:
            value.extend([item, 2])
        return value

    for kind in (dict, set, list):
        pure, compiled = grown(kind), grown(kind)
        expected = outcome(PyWriter(Mutate()), write(pure))
        assert outcome(CWriter(Mutate()), write(compiled)) == expected


def test_nothing_is_kept_alive_after_a_write_or_an_error() -> None:
    shared = [1.5]
    value = [shared, shared, {"x": shared}]
    bad = [shared, shared, object()]
    writer = CWriter()
    gc.collect()
    before = sys.getrefcount(shared)
    writer.jelly(value)
    with pytest.raises(TypeError):
        writer.jelly(bad)
    with pytest.raises(BananaError):
        writer.jelly([shared, shared, 2**500])
    assert sys.getrefcount(shared) == before
    assert not writer.shared(shared)


def test_a_destructor_may_use_the_writer_while_it_forgets() -> None:
    made: List[bytes] = []

    class Temporary:
        """Kept alive only by the writer's table; its destructor writes."""

        def __init__(self, writer: Any) -> None:
            self.writer = writer

        def __del__(self) -> None:
            made.append(self.writer.jelly([[1], {"a": [2]}, (3,)] * 2))

    class Hook:
        def jelly_object(self, obj: Any, writer: Any, out: List[bytes]) -> bool:
            writer.copy_form(b"temp", [obj.n], Temporary(writer), out)
            return True

    class Item:
        def __init__(self, n: int) -> None:
            self.n = n

    for items in (3, 100):  # a kept table, and one too large to keep
        value = [[Item(n), [n]] for n in range(items)]
        results = []
        for cls in (PyWriter, CWriter):
            made.clear()
            writer = cls(Hook())
            first = writer.jelly(value)
            results.append((first, list(made), writer.jelly(value)))
        assert results[0] == results[1]
        assert len(results[0][1]) == items


# ---------------------------------------------------------------- whole messages

class Thing(syncpb.Referenceable):
    def remote_name(self) -> str:
        return "thing"


class Point(syncpb.Copyable):
    def __init__(self, x: int, y: Any) -> None:
        self.x, self.y = x, y


class Counter(syncpb.Cacheable):
    def getStateToCacheAndObserveFor(self, perspective: Any, observer: Any) -> Any:
        return {"value": 1, "names": ["a", "b"]}


class Failing(syncpb.Copyable, Exception):
    pass


class RemotePoint(syncpb.RemoteCopy):
    pass


class RemoteFailing(syncpb.RemoteCopy):
    pass


class RemoteCounter(syncpb.RemoteCache):
    def setCopyableState(self, state: Any) -> None:  # noqa: N802 - a PB method name
        self.__dict__.update(state)


REGISTRY = syncpb.UnjellyableRegistry()
REGISTRY.register(Point, RemotePoint)
REGISTRY.register(Failing, RemoteFailing)
REGISTRY.register(Counter, RemoteCounter)


class Service(syncpb.Root):
    def __init__(self) -> None:
        self.thing, self.counter = Thing(), Counter()

    def remote_echo(self, *args: Any, **kwargs: Any) -> Any:
        return [args, kwargs]

    def remote_objects(self) -> Any:
        point = Point(1, [2, "three"])
        point.me = point
        return [self.thing, self.thing, point, point, self.counter, [self.counter],
                {"p": point}, b"b" * LARGE, "s" * LARGE]

    def remote_take(self, *args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    def remote_fail(self) -> None:
        raise ValueError("no " * 50)

    def remote_copy_fail(self) -> None:
        raise Failing("copied")

    def remote_unsendable(self) -> Any:
        return [1, object()]


def conversation(writer_cls: Any, monkeypatch: Any) -> List[bytes]:
    """Every message of a PB conversation with ``writer_cls`` on both sides."""
    monkeypatch.setattr(broker_module, "Writer", writer_cls)
    monkeypatch.setattr(wirefailure, "_counter", itertools.count(1))  # failures are numbered
    records = [{"id": i, "name": f"n{i}", "score": i / 3, "tags": ["a", "bc"]} for i in range(20)]
    shared = [1, "x"]
    server = Broker(root=Service())
    client = Broker(is_client=True, security=SecurityOptions(registry=REGISTRY))
    wire: List[bytes] = []

    def carry(source: Broker, target: Broker) -> List[Any]:
        data = source.data_to_send()
        wire.append(data)
        return target.receive_data(data)

    carry(server, client)
    carry(client, server)
    carry(server, client)
    callback = Thing()
    for name, args, kwargs in [
        ("echo", (records,), {}), ("take", (shared, shared), {"k": shared, "cb": callback}),
        ("take", (callback, [callback]), {}), ("echo", (shared, shared), {"k": shared}), ("objects", (), {}), ("objects", (), {}),
        ("fail", (), {}), ("copy_fail", (), {}), ("unsendable", (), {}),
        ("echo", (b"x" * 70000, "é" * 3000, 2**100, -(2**40), 1.5, None, True), {}),
    ]:
        client.call(b"root", name, args, kwargs)
        run_calls(server, carry(client, server))
        for event in carry(server, client):
            assert isinstance(event, (AnswerReceived, ErrorReceived))
    return wire


def test_a_pb_conversation_gives_the_same_messages(monkeypatch: Any) -> None:
    pure = conversation(PyWriter, monkeypatch)
    assert conversation(CWriter, monkeypatch) == pure


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7, 1460])
def test_a_compiled_message_decodes_the_same_in_any_pieces(step: Optional[int]) -> None:
    shared = [1]
    value = [{"a": shared, "b": (shared, "é")}, shared, b"z" * 5000, "s" * 300, 2**80, -1.5]
    server, client = Broker(root=Service()), Broker(is_client=True)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    client._writer = CWriter(client, True, client.limits.size_limit, client.limits.prefix_limit)
    client.call(b"root", "echo", (value,), {"k": value})
    data = client.data_to_send() + b"\x01"  # trailing data: the start of the next message
    if step is None:
        events = server.receive_data(data)
    else:
        events = []
        for at in range(0, len(data), step):
            events += server.receive_data(data[at:at + step])
    (call,) = events
    assert isinstance(call, CallReceived)
    (got,) = call.args
    assert got == [{"a": [1], "b": ([1], "é")}, [1], b"z" * 5000, "s" * 300, 2**80, -1.5]
    assert got[0]["a"] is got[1] and got[0]["b"][0] is got[1]
    assert call.kwargs["k"] == got


def test_every_split_point_of_a_compiled_message() -> None:
    shared = {"x": [1, 2]}
    data = CWriter().jelly([shared, (shared, "é" * 3), shared, 12345, b"None"])
    whole = Reader(data, 0, SecurityOptions()).jelly()
    for cut in range(1, len(data)):
        messages, rest = banana.split_messages(data[:cut])
        assert messages == [] and rest == data[:cut]
    messages, rest = banana.split_messages(data + data[:3])
    assert messages == [data] and rest == data[:3]
    assert Reader(data + data, 0, SecurityOptions()).jelly() == whole
