"""The tagged JSON form of ``syncpb call`` (syncpb.cli.tagged)."""

from __future__ import annotations

import datetime
import decimal
import json
import math

import pytest
from hypothesis import given, strategies as st

from syncpb.cli.tagged import TaggedError, from_json, to_json

KEYS = st.one_of(st.text(max_size=5), st.integers(), st.binary(max_size=5))
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.binary(max_size=10),
    st.floats(allow_nan=False), st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(), st.dates(), st.times(),
    # a number of seconds: exact to the microsecond within +-10,000 days
    st.timedeltas(min_value=datetime.timedelta(days=-10_000),
                  max_value=datetime.timedelta(days=10_000)))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.lists(inner, max_size=4).map(tuple),
    st.dictionaries(KEYS, inner, max_size=4),
    st.sets(st.integers(), max_size=4),
    st.frozensets(st.text(max_size=3), max_size=4)), max_leaves=12)


@given(VALUES)
def test_every_value_survives_json_text(value):
    text = json.dumps(to_json(value))
    back = from_json(json.loads(text))
    assert back == value
    assert type(back) is type(value)


def test_the_documented_forms():
    assert to_json(b"hi") == {"$bytes": "aGk="}
    assert to_json((1, 2)) == {"$tuple": [1, 2]}
    assert to_json({3, 1}) == {"$set": [1, 3]}
    assert to_json(decimal.Decimal("1.10")) == {"$decimal": "1.10"}
    assert to_json(datetime.datetime(2026, 12, 6, 10)) == {"$datetime": "2026-12-06T10:00:00"}
    assert to_json(datetime.timedelta(seconds=90)) == {"$timedelta": 90.0}
    assert to_json(float("-inf")) == {"$float": "-inf"}
    assert to_json({1: "a"}) == {"$dict": [[1, "a"]]}
    assert to_json({"$x": 1}) == {"$dict": [["$x", 1]]}
    assert math.isnan(from_json({"$float": "nan"}))


def test_objects_json_lacks_are_described():
    class Point:
        def __init__(self):
            self.x, self.y = 1, 2

    assert to_json(Point()) == {"$copy": f"{__name__}.{Point.__qualname__}",
                              "state": {"x": 1, "y": 2}}

    class Ref:
        def callRemote(self, *args):  # noqa: N802 - what marks a remote reference
            raise AssertionError("not called")

        def __str__(self):
            return "<RemoteReference 1>"

    assert to_json(Ref()) == {"$ref": "<RemoteReference 1>"}


@pytest.mark.parametrize("bad, message", [
    ({"$nope": 1}, "unknown tag"),
    ({"$bytes": "***"}, "not valid base64"),
    ({"$tuple": 1}, "takes an array"),
    ({"$decimal": "x"}, "not a number"),
    ({"$float": "1.5"}, '"nan", "inf" or "-inf"'),
    ({"$date": "yesterday"}, "$date"),
    ({"$dict": [[1]]}, "[key, value] pairs"),
    ({"$dict": [[[1], 2]]}, "cannot be a list"),
    ({"a": 1, "$b": 2}, "keys starting with '$' are tags"),
])
def test_bad_tags_are_named(bad, message):
    with pytest.raises(TaggedError, match=None) as info:
        from_json(bad)
    assert message in str(info.value)
