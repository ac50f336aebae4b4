"""PB values as JSON, for ``syncpb call``: plain JSON where JSON has the
type, and one-key objects tagged with ``$`` for what it lacks.

==========================================  ====================================
PB value                                    JSON
==========================================  ====================================
None, bool, int, float, str, list, dict     null, true/false, number, string,
with text keys not starting with ``$``      array, object
bytes                                       ``{"$bytes": "<base64>"}``
tuple, set, frozenset                       ``{"$tuple": [...]}``, ``{"$set": [...]}``,
                                            ``{"$frozenset": [...]}``
decimal.Decimal                             ``{"$decimal": "1.10"}``
datetime, date, time                        ``{"$datetime": "2026-12-06T10:00:00"}``,
                                            ``{"$date": "2026-12-06"}``,
                                            ``{"$time": "10:00:00"}`` (ISO 8601)
timedelta                                   ``{"$timedelta": 90.5}`` (seconds; exact to
                                            the microsecond within 10,000 days)
NaN and infinities                          ``{"$float": "nan"}``, ``"inf"``, ``"-inf"``
any other dict                              ``{"$dict": [[key, value], ...]}``
a remote reference (output only)            ``{"$ref": "<description>"}``
a copied object (output only)               ``{"$copy": "<class>", "state": {...}}``
==========================================  ====================================

:func:`from_json` turns parsed JSON into PB values (for arguments);
:func:`to_json` turns a PB value into something ``json.dumps`` writes.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import math
from typing import Any, Callable, Dict, List

__all__ = ["TaggedError", "from_json", "to_json"]


class TaggedError(ValueError):
    """A tagged value that does not decode (bad base64, unknown tag...)."""


def _items(value: Any, tag: str) -> List[Any]:
    if not isinstance(value, list):
        raise TaggedError(f'"{tag}" takes an array, not {type(value).__name__}')
    return [from_json(item) for item in value]


def _pairs(value: Any) -> Dict[Any, Any]:
    if not isinstance(value, list) or not all(isinstance(p, list) and len(p) == 2
                                              for p in value):
        raise TaggedError('"$dict" takes an array of [key, value] pairs')
    result: Dict[Any, Any] = {}
    for key, item in value:
        key = from_json(key)
        if isinstance(key, (list, dict, set)):
            raise TaggedError(f"a dictionary key cannot be a {type(key).__name__}")
        result[key] = from_json(item)
    return result


def _text(value: Any, tag: str) -> str:
    if not isinstance(value, str):
        raise TaggedError(f'"{tag}" takes a string, not {type(value).__name__}')
    return value


def _bytes(value: Any) -> bytes:
    try:
        return base64.b64decode(_text(value, "$bytes"), validate=True)
    except binascii.Error as exc:
        raise TaggedError(f'"$bytes" is not valid base64: {exc}') from None


def _decimal(value: Any) -> decimal.Decimal:
    try:
        return decimal.Decimal(_text(value, "$decimal"))
    except decimal.InvalidOperation:
        raise TaggedError(f'"$decimal" is not a number: {value!r}') from None


def _float(value: Any) -> float:
    text = _text(value, "$float")
    if text not in ("nan", "inf", "-inf"):
        raise TaggedError(f'"$float" is "nan", "inf" or "-inf", not {text!r}')
    return float(text)


def _timedelta(value: Any) -> datetime.timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaggedError('"$timedelta" takes a number of seconds')
    return datetime.timedelta(seconds=value)


def _iso(kind: Callable[[str], Any], tag: str) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        try:
            return kind(_text(value, tag))
        except ValueError as exc:
            raise TaggedError(f'"{tag}": {exc}') from None
    return parse


_DECODERS: Dict[str, Callable[[Any], Any]] = {
    "$bytes": _bytes,
    "$tuple": lambda v: tuple(_items(v, "$tuple")),
    "$set": lambda v: set(_items(v, "$set")),
    "$frozenset": lambda v: frozenset(_items(v, "$frozenset")),
    "$decimal": _decimal,
    "$float": _float,
    "$timedelta": _timedelta,
    "$datetime": _iso(datetime.datetime.fromisoformat, "$datetime"),
    "$date": _iso(datetime.date.fromisoformat, "$date"),
    "$time": _iso(datetime.time.fromisoformat, "$time"),
    "$dict": _pairs,
}


def from_json(value: Any) -> Any:
    """The PB value that parsed JSON ``value`` stands for.

    Raises:
        TaggedError: a ``$`` tag that is unknown or malformed.
    """
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, item),) = value.items()
            if key.startswith("$"):
                decode = _DECODERS.get(key)
                if decode is None:
                    raise TaggedError(f"unknown tag {key!r} (known: {', '.join(_DECODERS)})")
                return decode(item)
        for key in value:
            if key.startswith("$"):
                raise TaggedError(f"key {key!r}: keys starting with '$' are tags; "
                                  f'write such a dictionary as {{"$dict": [[key, value], ...]}}')
        return {key: from_json(item) for key, item in value.items()}
    return value


def _float_json(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data, tagging what JSON lacks (never fails:
    an unknown object becomes ``{"$copy": class, "state": ...}``)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _float_json(value)
    if isinstance(value, list):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {key: to_json(item) for key, item in value.items()}
        return {"$dict": [[to_json(k), to_json(v)] for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return {"$tuple": [to_json(item) for item in value]}
    if isinstance(value, frozenset):
        return {"$frozenset": [to_json(item) for item in _ordered(value)]}
    if isinstance(value, set):
        return {"$set": [to_json(item) for item in _ordered(value)]}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"$date": value.isoformat()}
    if isinstance(value, datetime.time):
        return {"$time": value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {"$timedelta": value.total_seconds()}
    if hasattr(value, "callRemote"):
        return {"$ref": str(value)}
    state = getattr(value, "__dict__", None)
    return {"$copy": f"{type(value).__module__}.{type(value).__qualname__}",
            "state": to_json(dict(state)) if isinstance(state, dict) else repr(value)}


def _ordered(items: Any) -> List[Any]:
    """A set's items in a stable order (sorted where they compare)."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)
