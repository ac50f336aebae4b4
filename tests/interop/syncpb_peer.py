"""The syncpb side of the Twisted interop tests (imports no Twisted).

``tests/peers/interop_types.py`` imports ``twisted.spread.pb`` at import
time, so the test process (which must never import Twisted) cannot use it.
This module is its syncpb twin:

* ``MyError`` and ``CopyableError``: ``syncpb.Error`` subclasses travelling
  under the same wire names as the Twisted classes
  (``interop_types.MyError``, ``interop_types.CopyableError``). They are
  defined exactly once per process, here: syncpb maps a wire name to the
  *last* class defined under it, so a second definition in another test
  module would silently take over the name.
* ``sample_values()``, ``make_cycle()``, ``make_shared()``: a copy of the
  expectations in ``interop_types``. The copy cannot drift unnoticed: the
  syncpb server below returns these values from ``types()`` and the
  unchanged Twisted client compares them with the originals
  (``types.*`` and ``types.no_extra_keys`` in test_twisted_client.py).
* ``mismatch()`` / ``structure_problem()``: exact comparison (values *and*
  types all the way down, cycles handled), as the Twisted client does it.
* ``RootProvider``: a syncpb server root with exactly the methods of
  ``tests/peers/twisted_server.py`` and the same behaviour.
"""

import gc
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import gevent

import syncpb


# -- the classes shared with the Twisted peers ---------------------------------


class MyError(syncpb.Error):
    """Twin of ``interop_types.MyError`` (a plain ``pb.Error`` subclass)."""

    __module__ = "interop_types"


class CopyableError(syncpb.Error):
    """Stand-in for ``interop_types.CopyableError``.

    The Twisted class is a ``pb.Error`` *and* a ``pb.Copyable``, so Twisted
    sends the exception object itself (copy tag
    ``interop_types.CopyableError``, state ``message``/``code``). syncpb has
    no Copyable yet (a later issue), so this twin can only travel as a
    CopyableFailure of the same name.
    """

    __module__ = "interop_types"

    def __init__(self, message, code):
        super().__init__(message, code)
        self.message = message
        self.code = code

    def __str__(self):
        return f"{self.message} (code {self.code})"


# -- the expected values (a copy of interop_types.sample_values) ---------------


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


SAMPLE_NAMES = list(sample_values())


# -- exact comparison ----------------------------------------------------------


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


# -- a syncpb server root equal to tests/peers/twisted_server.py --------------


class Greeter(syncpb.Referenceable):
    """A small object handed out by reference."""

    def remote_hello(self, name):
        return "hello " + name


class ConnectionRoot(syncpb.Referenceable):
    """The root object published on one connection.

    Server methods run in their own greenlet in the server's gevent hub, so
    ``gevent.sleep`` and returned Deferreds never stall other calls.
    """

    def __init__(self, broker):
        self.broker = broker
        self.stored = None

    # -- plain values ------------------------------------------------------

    def remote_echo(self, x):
        return x

    def remote_add(self, a, b):
        return a + b

    def remote_echoKw(self, **kw):
        return kw

    def remote_echoArgs(self, *args, **kw):
        return [list(args), kw]

    def remote_types(self):
        return sample_values()

    def remote_cycle(self):
        return make_cycle()

    def remote_shared(self):
        return make_shared()

    # -- errors ------------------------------------------------------------

    def remote_failValue(self):
        raise ValueError("bad value")

    def remote_failPbError(self):
        raise MyError("custom pb error")

    def remote_failDeferred(self):
        # Fails on the next turn of the hub, like Twisted's callLater(0, ...).
        d = syncpb.Deferred()
        gevent.get_hub().loop.run_callback(d.errback, KeyError("missing"))
        return d

    def remote_failCopyable(self):
        raise CopyableError("copyable pb error", 17)

    # -- deferred results ----------------------------------------------------

    def remote_slowAdd(self, a, b, delay):
        gevent.sleep(delay)  # cooperative: only this call's greenlet waits
        return a + b

    # -- references ----------------------------------------------------------

    def remote_getRef(self):
        return Greeter()

    def remote_isSame(self, a, b):
        return a is b

    def remote_refCount(self):
        return self.broker.export_count  # the root is not counted

    def remote_callMeBack(self, ref, *args):
        return ref.callRemote("step", *args)

    def remote_callMeBackKw(self, ref, name, *args, **kw):
        return ref.callRemote(name, *args, **kw)

    def remote_store(self, ref):
        self.stored = ref

    def remote_callStored(self, name, *args):
        return self.stored.callRemote(name, *args)

    def remote_dropStored(self):
        # Dropping the last reference makes the RemoteReference send decref.
        self.stored = None
        gc.collect()
        return True


class RootProvider(syncpb.Root):
    """Gives every new connection (broker) its own ConnectionRoot."""

    def __init__(self):
        self.roots = []

    def rootObject(self, broker):  # noqa: N802 - Twisted's name
        root = ConnectionRoot(broker)
        self.roots.append(root)
        return root
