"""A session driven by gevent (layer L4): inline calls, hand-off when one waits.

Used by the server for every connection (client connections are
:class:`~syncpb.threaded.ThreadedSession`, whoever makes them). See
:class:`GreenSession` for how calls run.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Literal, Optional

from .broker import Broker, CallReceived
from .session import GreenCore, Session, _get_ident, real
from .sessioncore import YIELD_MISSES, YIELD_PROBE  # (the read loop's: see GreenCore._look_again)

__all__ = ["GreenSession", "YIELD_MISSES", "YIELD_PROBE"]

log = logging.getLogger("syncpb")
#: Queue length (messages) at which a slow reader's unsent bytes are first summed.
_FIRST_UNSENT_CHECK = 16


class _SwitchWatch:
    """Notices when a greenlet that runs calls inline switches away.

    One per OS thread (``greenlet.settrace`` is per thread). A reader
    greenlet registers itself in :attr:`watched` while it runs calls; if it
    switches away (the call waits for something), its session is told at
    once, from inside the switch, and hands reading to a new greenlet.
    """

    def __init__(self) -> None:
        import greenlet
        self.watched: Dict[Any, "GreenSession"] = {}
        self.previous = greenlet.settrace(self._trace)

    def _trace(self, event: Literal["switch", "throw"], args: Any) -> None:
        if self.watched and (event == "switch" or event == "throw"):
            session = self.watched.pop(args[0], None)
            if session is not None:
                session._reader_left(args[0])
        if self.previous is not None:
            self.previous(event, args)


_thread_local = real("threading", "local")()


def _switch_watch() -> _SwitchWatch:
    watch = getattr(_thread_local, "switch_watch", None)
    if watch is None:
        watch = _thread_local.switch_watch = _SwitchWatch()
    return watch


class GreenSession(GreenCore, Session):
    """A session driven by gevent.

    Incoming calls run inline in the reader greenlet, in arrival order,
    which costs nothing extra for the usual call that does not wait. The
    moment a call waits (a gevent sleep, socket or event, a blocking PB
    call), a :class:`_SwitchWatch` notices the switch and a new greenlet
    takes over reading and the remaining calls; the waiting call finishes
    in the old greenlet, which then ends. So a slow call never stalls the
    others, and a fast one never pays for a greenlet of its own.

    Must be created in the thread that runs its hub. Calls, answers and
    releases may come from other threads; their writes are handed to the
    hub thread.
    """

    def __init__(self, sock: Any, broker: Broker, name: str = "") -> None:
        import gevent
        import gevent.lock
        from greenlet import getcurrent
        self._gevent = gevent
        self._getcurrent = getcurrent
        self._hub = gevent.get_hub()
        self._hub_thread = _get_ident()
        self._send_mutex = gevent.lock.Semaphore()
        self._watch = _switch_watch()
        #: calls read and not yet run, in order (at most Limits.max_incoming_calls
        #: by default; a list costs an idle connection less than a deque)
        self._calls: List[CallReceived] = []
        self._yield_misses = 0  # empty reads since a yield last found data (_look_again)
        self._reader: Any = None
        self._batching = False
        self._draining = False
        self._check_unsent_at = _FIRST_UNSENT_CHECK
        #: when the message now arriving began (monotonic), for the server's
        #: message_timeout; kept only when ``track_messages`` is set
        self.message_started: Optional[float] = None
        self.track_messages = False
        super().__init__(sock, broker, name)


    def _flush(self) -> None:
        if self._batching and self._getcurrent() is self._reader:
            return  # the reader writes once, after the whole batch of calls
        if _get_ident() != self._hub_thread:
            self._hub.loop.run_callback_threadsafe(self._flush)
        else:
            self._write_or_hand_off()

    def _write_or_hand_off(self) -> None:
        """Write what the socket takes now; a writer greenlet waits to send
        the rest, so the reader never stops reading because the peer is
        slow to read (two peers that both only wrote would deadlock)."""
        if self._draining:  # the writer greenlet sends everything queued, in order
            if len(self._queue) >= self._check_unsent_at:
                self._check_unsent()
            return
        with self._send_mutex:
            self._write_queue_nowait()
        if self._queue and not self._lost_done:
            if len(self._queue) >= self._check_unsent_at:
                self._check_unsent()
                if self._lost_done:
                    return
            self._draining = True
            self._gevent.spawn_raw(self._drain)

    def _check_unsent(self) -> None:
        """The peer is slow to read: close the connection if what waits to
        be written exceeds ``Limits.max_unsent_bytes``. Summed only at
        doubling queue lengths, so the check costs O(1) per message."""
        limit = self.broker.limits.max_unsent_bytes
        queue = self._queue
        if limit is None:
            self._check_unsent_at = 1 << 62
            return
        unsent = sum(map(len, queue))
        if unsent > limit:
            reason = (f"the peer does not read: {unsent} bytes waiting to be sent, over "
                      f"Limits.max_unsent_bytes={limit}")
            log.warning("closing PB connection %s: %s", self.name, reason)
            self._lost(reason, None)
        else:
            self._check_unsent_at = 2 * len(queue)

    def _drain(self) -> None:
        try:
            with self._send_mutex:
                self._write_queue()  # gevent's sendall: waits only this greenlet
        finally:
            self._draining = False
            self._check_unsent_at = _FIRST_UNSENT_CHECK
        if self._queue and not self._lost_done:
            self._write_or_hand_off()

    def close_after_writing(self, reason: str, timeout: Optional[float]) -> None:
        """Write everything queued, waiting at most ``timeout`` seconds for
        a slow reader, then close (in the hub thread; a graceful stop)."""
        if not self.closed:
            with self._lock:
                self._enqueue_locked()
            # silent when it expires (the documented False)
            with self._gevent.Timeout(timeout, False):
                with self._send_mutex:
                    self._write_queue()
        self.close(reason)

    def spawn(self, task: Any, name: str) -> None:
        """Run ``task`` in a new greenlet of this session's hub."""
        if _get_ident() == self._hub_thread:
            self._gevent.spawn_raw(task)
        else:
            self._hub.loop.run_callback_threadsafe(self._gevent.spawn_raw, task)

    def _kick(self) -> None:
        self._hub.loop.run_callback_threadsafe(self._flush_released)

    def _flush_released(self) -> None:
        with self._lock:
            self._enqueue_locked()
        if self._queue and not self.closed:
            self._flush()

    def _dispatch(self, call: CallReceived) -> None:
        self._calls.append(call)

    def _reader_left(self, greenlet: Any) -> None:
        """The reader switched away inside a call (runs inside the switch)."""
        if self._reader is greenlet and not self._lost_done:
            self._reader = None
            self._batching = False
            self._gevent.spawn_raw(self.run)

    def start(self) -> None:
        """Start reading in a new greenlet."""
        self._gevent.spawn_raw(self.run)

    def _note_message(self) -> None:
        """Remember when the message now arriving began (None: none is)."""
        if not self.broker.message_under_way:
            self.message_started = None
        elif self.message_started is None:
            self.message_started = time.monotonic()
