"""Exceptions to and from Twisted's ``CopyableFailure`` wire form (L1).

A failed call is answered with ``['error', id, [tag, state]]`` where the tag
is ``twisted.spread.pb.CopyableFailure`` and the state a dictionary described
in section 3.11 of the wire reference. This module builds that state from a
local exception and turns a received state back into an exception:

* a wire type naming a local :class:`~syncpb.errors.Error` subclass (or one
  of syncpb's own errors with a Twisted twin) becomes that class again;
* anything else becomes :class:`~syncpb.errors.RemoteError`, which carries
  the remote type name, message, parents and (when the peer opted in) the
  remote traceback. No class is ever looked up by an arbitrary name.
"""

from __future__ import annotations

import itertools
import traceback
from typing import Any, Dict, List

from .errors import Error, RemoteError, error_class_for, wire_message, wire_name_of

__all__ = ["FAILURE_TAG", "failure_state", "exception_from_state"]

FAILURE_TAG = b"twisted.spread.pb.CopyableFailure"
_NO_TRACEBACK = "Traceback unavailable\n"
_counter = itertools.count(1)


def _parents(cls: type) -> List[str]:
    return [wire_name_of(klass) for klass in cls.__mro__]


def failure_state(exc: BaseException, unsafe_tracebacks: bool = False) -> Dict[str, Any]:
    """Return the CopyableFailure state for ``exc``, keys in Twisted's order.

    Args:
        exc: the exception a remote method raised.
        unsafe_tracebacks: include the formatted traceback (opt-in: it
            shows file paths and code to the peer).
    """
    if isinstance(exc, RemoteError):
        wire_type, parents = exc.remote_type, list(exc.remote_parents)
        message = exc.message
    else:
        wire_type, parents = wire_name_of(type(exc)), _parents(type(exc))
        message = wire_message(exc)  # without syncpb's local default text, as Twisted's
    text = _NO_TRACEBACK
    if unsafe_tracebacks:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "count": next(_counter),
        "type": wire_type.encode("utf-8"),
        "value": message,
        "captureVars": False,
        "tb": None,
        "unsafeTracebacks": unsafe_tracebacks,
        "parents": parents,
        "frames": [],
        "stack": [],
        "traceback": text,
    }


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def exception_from_state(state: Any) -> BaseException:
    """Turn a received CopyableFailure state into a local exception."""
    if not isinstance(state, dict):
        return RemoteError("builtins.Exception", f"malformed failure: {state!r}")
    fields = {_text(key): value for key, value in state.items()}
    wire_type = _text(fields.get("type")) or "builtins.Exception"
    message = _text(fields.get("value"))
    parents = fields.get("parents")
    if not isinstance(parents, (list, tuple)) or not parents:
        parents = [wire_type]
    parents = [_text(p) for p in parents]
    remote_tb = _text(fields.get("traceback")) if fields.get("unsafeTracebacks") else None
    cls = error_class_for(wire_type)
    if cls is not None:
        exc = cls.__new__(cls)
        exc.args = (message,)
        if isinstance(exc, Error) or remote_tb is not None:
            exc.remote_traceback = remote_tb
        return exc
    return RemoteError(wire_type, message, remote_tb, parents)
