"""Property tests (hypothesis): round trips and arbitrary input never crash."""

from __future__ import annotations

import decimal
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncpb import banana
from syncpb.broker import AnswerReceived, CallReceived, ProtocolViolation
from syncpb.flavors import Root
from syncpb.jelly import Reader, SecurityOptions, Writer

from brokerpair import connected_pair, run_calls

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**447), 2**447),
    st.floats(allow_nan=False), st.text(max_size=40), st.binary(max_size=300),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.datetimes(), st.dates(), st.times(), st.timedeltas(),
)
hashables = st.one_of(st.integers(), st.text(max_size=10), st.binary(max_size=10))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.tuples(inner, inner),
        st.dictionaries(hashables, inner, max_size=5),
        st.sets(hashables, max_size=5), st.frozensets(hashables, max_size=5)),
    max_leaves=30)


def same(a, b):
    """Equality that also checks exact types, recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        if a.keys() == b.keys():
            return all(same(a[k], b[k]) for k in a)
        # A NaN key is never equal to another NaN: pair the items in order.
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    if is_nan(a):
        # NaN equals no NaN, and a decoded NaN is a new object: compare kinds.
        return is_nan(b) and str(a) == str(b)
    if isinstance(a, (set, frozenset)) and a != b:
        # Sets holding NaNs: the rest must be equal and the NaNs as many.
        real_a = {x for x in a if not is_nan(x)}
        real_b = {x for x in b if not is_nan(x)}
        return real_a == real_b and len(a) - len(real_a) == len(b) - len(real_b)
    return a == b


def is_nan(value) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, decimal.Decimal) and value.is_nan()


@settings(max_examples=300, deadline=None)
@given(values)
def test_any_value_round_trips(value):
    for vocab in (True, False):
        data = Writer(vocab=vocab).jelly(value)
        reader = Reader(data, 0, SecurityOptions(), vocab=vocab)
        assert same(reader.jelly(), value)
        assert reader.pos == len(data)


class Echo(Root):
    def remote_echo(self, value):
        return value


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.lists(st.integers(1, 50), max_size=20))
def test_call_and_answer_survive_any_chunking(value, cuts):
    server, client = connected_pair(Echo())
    client.call(b"root", "echo", (value,))
    data, events, at = client.data_to_send(), [], 0
    for size in cuts + [len(data)]:
        events += server.receive_data(data[at:at + size])
        at += size
    (call,) = [e for e in events if isinstance(e, CallReceived)]
    server.answer(call.request_id, call.method(*call.args))
    answer = server.data_to_send()
    got = []
    for i in range(0, len(answer), 7):
        got += client.receive_data(answer[i:i + 7])
    (event,) = got
    assert isinstance(event, AnswerReceived) and same(event.value, value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data):
    server, _ = connected_pair(Echo())
    events = server.receive_data(data)
    violations = [e for e in events if isinstance(e, ProtocolViolation)]
    assert len(violations) <= 1 and (not violations or events[-1] is violations[0])
    run_calls(server, events)
    server.data_to_send()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_framer_agrees_with_the_decoder(data):
    try:
        whole = banana.Decoder().feed(data)
    except Exception as exc:
        assert isinstance(exc, banana.BananaError)
        return
    decoder, pieces = banana.Decoder(), []
    for i in range(len(data)):
        pieces += decoder.feed(data[i:i + 1])
    assert pieces == whole
