"""Shared, Twisted-free test data and checks for the interoperability tests.

Imported by the Twisted peer programs (which put this folder on sys.path)
and by the syncpb side of the tests, so both compare against one set of
expected values with one comparison.
"""

import hashlib
import math
import random
from datetime import date, datetime, time, timedelta
from decimal import Decimal


def make_cycle():
    """A list that contains itself."""
    cycle = []
    cycle.append(cycle)
    return cycle


def make_shared():
    """A list holding the same sub-list twice."""
    inner = [1, 2]
    return [inner, inner]


def sample_values():
    """One value of every Jelly type, keyed by a short name (fresh objects)."""
    return {
        "none": None,
        "true": True,
        "false": False,
        "int": 42,
        "neg": -7,
        "big": 2**400,
        "negbig": -(2**400),
        "float": 3.25,
        "str": "hello",
        "nonascii": "héllo wörld ✓ 日本",
        "empty_str": "",
        "bytes": b"\x00\xffabc",
        "vocab_bytes": b"list",
        "list": [1, "two", b"three", None, [4.5]],
        "tuple": (1, "a", (2, 3)),
        "dict_tuple_key": {(1, 2): "x"},
        "set": {1, 2, 3},
        "frozenset": frozenset({"a", "b"}),
        "decimal": Decimal("3.14"),
        "negdecimal": Decimal("-1.5E+3"),
        "datetime": datetime(2024, 1, 2, 3, 4, 5, 678901),
        "date": date(2024, 2, 29),
        "time": time(23, 59, 58, 123456),
        "timedelta": timedelta(days=-1, seconds=5, microseconds=7),
        "shared": make_shared(),
        "cycle": make_cycle(),
    }


def short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def mismatch(expected, got, path="value", memo=None):
    """None if ``got`` equals ``expected`` with exactly the same types all
    the way down (str vs bytes, tuple vs list, set vs frozenset, ...), else
    a description of the first difference. Cycles are handled by
    remembering the pairs already being compared."""
    if memo is None:
        memo = set()
    if type(expected) is not type(got):
        return (
            f"{path}: got {type(got).__name__} {short(got)}, "
            f"expected {type(expected).__name__} {short(expected)}"
        )
    pair = (id(expected), id(got))
    if pair in memo:
        return None
    if isinstance(expected, (list, tuple)):
        memo.add(pair)
        if len(expected) != len(got):
            return f"{path}: got length {len(got)}, expected {len(expected)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            problem = mismatch(e, g, f"{path}[{i}]", memo)
            if problem:
                return problem
        return None
    if isinstance(expected, dict):
        memo.add(pair)
        if len(expected) != len(got):
            return f"{path}: got {len(got)} keys {short(list(got))}, expected {len(expected)}"
        for key, e in expected.items():
            matches = [k for k in got if k == key and mismatch(key, k) is None]
            if not matches:
                return f"{path}: key {short(key)} missing (keys: {short(list(got))})"
            problem = mismatch(e, got[matches[0]], f"{path}[{key!r}]", memo)
            if problem:
                return problem
        return None
    if isinstance(expected, (set, frozenset)):
        if expected != got:
            return f"{path}: got {short(got)}, expected {short(expected)}"
        for e in expected:
            g = next(g for g in got if g == e)
            problem = mismatch(e, g, f"{path}{{{e!r}}}")
            if problem:
                return problem
        return None
    if isinstance(expected, float):
        if math.isnan(expected) and math.isnan(got):
            return None
        if expected == got and math.copysign(1, expected) != math.copysign(1, got):
            return f"{path}: got {got!r}, expected {expected!r} (sign of zero)"
    if expected != got:
        return f"{path}: got {short(got)}, expected {short(expected)}"
    return None


def structure_problem(name, value):
    """Identity checks for the values whose point is object identity."""
    if name == "cycle":
        if isinstance(value, list) and len(value) == 1 and value[0] is value:
            return None
        return f"cycle: r[0] is not r ({short(value)})"
    if name == "shared":
        if isinstance(value, list) and len(value) == 2 and value[0] is value[1]:
            return None
        return f"shared: r[0] is not r[1] ({short(value)})"
    return None


#: Size of the paging tests' payload (both peers build the same bytes).
BIG_SIZE = 50 * 1024 * 1024


def big_blob(size=BIG_SIZE):
    """The same pseudo-random bytes in every process (50 MiB by default)."""
    return random.Random(20261121).randbytes(BIG_SIZE)[:size]


def sha256(data):
    return hashlib.sha256(data).hexdigest()
