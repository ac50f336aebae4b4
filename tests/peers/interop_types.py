"""Classes and sample values shared by the Twisted interop peers.

The Twisted peer scripts in this directory put the directory on ``sys.path``
and ``import interop_types``, so every class here travels on the wire under
the module name ``interop_types`` (for example ``b'interop_types.MyError'``
and the Copyable tag ``b'interop_types.CopyableError'``). A syncpb peer that
wants to exchange these classes must use the same names.

``sample_values()`` is the single source of truth for the values the server's
``types()`` method returns and the client checks against.
"""

from datetime import date, datetime, time, timedelta
from decimal import Decimal

from twisted.spread import pb


class MyError(pb.Error):
    """A plain ``pb.Error`` subclass: travels as a CopyableFailure whose
    ``type`` is ``b'interop_types.MyError'``."""


class CopyableError(pb.Error, pb.Copyable):
    """An exception that is also a Copyable, so PB sends the exception object
    itself (tag ``b'interop_types.CopyableError'``, state ``message``/``code``)
    instead of a CopyableFailure."""

    def __init__(self, message, code):
        super().__init__(message, code)
        self.message = message
        self.code = code

    def getStateToCopy(self):
        return {"message": self.message, "code": self.code}

    def __str__(self):
        return f"{self.message} (code {self.code})"


class RemoteCopyableError(CopyableError, pb.RemoteCopy):
    """The receiving side's copy of a CopyableError (built without calling
    ``__init__``; its attributes come from the copied state)."""


pb.setUnjellyableForClass(CopyableError, RemoteCopyableError)


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
    """One value of every Jelly type, keyed by a short name."""
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
