"""Running the peer's calls and sending their answers (layer L4).

Theory of operation
-------------------
A session hands each incoming call to its dispatch policy
(:meth:`~syncpb.session.Session._dispatch`: a greenlet per call, or the
ordered thread dispatcher), which runs :meth:`IncomingCalls.run_call`. A
method marked :func:`syncpb.adapters.blocking` (or every method, if the
session's ``offload`` says so) runs in the offload pool instead. A method
may return a Deferred: the call is answered when it fires, from any thread.
An answer is encoded under the broker lock and written like any other
output; one that comes after the connection was lost is dropped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from .deferred import Deferred
from .errors import Error
from .failure import Failure

if TYPE_CHECKING:  # pragma: no cover
    from .broker import Broker, CallReceived

__all__ = ["IncomingCalls", "BLOCKING_ATTRIBUTE", "MARKS", "is_blocking"]

log = logging.getLogger("syncpb")


#: The attribute :func:`syncpb.adapters.blocking` sets on a method that must
#: run in a thread pool rather than in the hub.
BLOCKING_ATTRIBUTE = "syncpb_blocking"


class _Marks:
    """Whether anything in this process was ever marked blocking: until then
    the per-call check costs one attribute read."""

    used = False


MARKS = _Marks()


def is_blocking(method: Any) -> bool:
    """True when ``method`` (bound, or a view's ``functools.partial``) was
    marked with :func:`syncpb.adapters.blocking`."""
    if not MARKS.used:
        return False
    func = getattr(method, "__func__", None)
    if func is None:
        inner = getattr(method, "func", None)  # functools.partial: a view_ method
        func = getattr(inner, "__func__", inner)
    return BLOCKING_ATTRIBUTE in getattr(func, "__dict__", ())


class IncomingCalls:
    """The incoming-call side of :class:`~syncpb.session.Session` (a mixin:
    it uses the session's broker, lock, offload and write queue)."""

    # provided by the session
    offload: Any
    broker: Broker
    _lock: Any
    _lost_done: bool
    _queue: Any
    _flush: Any

    def run_call(self, call: CallReceived) -> None:
        """Run an incoming call and send its answer (the dispatchers' job)."""
        offload = self.offload
        try:
            if offload is not None and (offload.everything or is_blocking(call.method)):
                result = offload.submit(call.method, call.args, call.kwargs)
            else:
                result = call.method(*call.args, **call.kwargs)
        except BaseException as exc:
            self._log_failure(call, exc)
            self._reply(call, exc, False)
            return
        if isinstance(result, Deferred):
            result.addCallbacks(self._answer_later(call), self._fail_later(call))
            return
        self._reply(call, result, True)

    def _answer_later(self, call: CallReceived) -> Callable[[Any], None]:
        """The callback that answers ``call`` when its Deferred fires."""
        return lambda value: self._reply(call, value, True)

    def _fail_later(self, call: CallReceived) -> Callable[[Failure], None]:
        """The errback that fails ``call`` when its Deferred fails."""
        return lambda failure: self._reply(call, failure.value, False)

    def _log_failure(self, call: CallReceived, exc: BaseException) -> None:
        if not isinstance(exc, Error):  # an Error is an expected failure, as in Twisted
            log.warning("remote method %s raised; the peer receives the failure",
                        getattr(call.method, "__qualname__", "?"), exc_info=exc)

    def _reply(self, call: CallReceived, value: Any, ok: bool) -> None:
        if not call.answer_required:
            return
        with self._lock:
            if self._lost_done:
                return
            broker = self.broker
            if ok:
                broker.answer(call.request_id, value, call.perspective)
            else:
                broker.fail(call.request_id, value, call.perspective)
            self._queue.extend(broker.pieces_to_send())
        self._flush()
