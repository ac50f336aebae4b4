"""The events the sans-IO broker returns from ``receive_data`` (layer L1.8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

__all__ = ["Ready", "CallReceived", "AnswerReceived", "ErrorReceived", "ProtocolViolation"]


@dataclass(slots=True)
class Ready:
    """The dialect is settled; calls may be made."""


@dataclass(slots=True)
class CallReceived:
    """The peer called one of our methods; run it and answer by request id."""

    #: None for a call that needs no answer made on the broker's own behalf
    #: (a cache's ``stoppedObserving``).
    request_id: Optional[int]
    method: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Dict[str, Any]
    answer_required: bool
    #: The perspective the answer is encoded for (pass it to :meth:`Broker.answer`).
    perspective: Any = None


@dataclass(slots=True)
class AnswerReceived:
    """A call of ours returned ``value``."""

    request_id: int
    value: Any


@dataclass(slots=True)
class ErrorReceived:
    """A call of ours failed with ``error``."""

    request_id: int
    error: BaseException


@dataclass(slots=True)
class ProtocolViolation:
    """The peer broke the protocol; close the connection."""

    error: BaseException
