"""A session's write queue: the broker's bytes onto the socket, in order (layer L4).

Theory of operation
-------------------
Bytes the broker produces are moved, under the broker lock, onto a FIFO
queue (:meth:`SendQueue._enqueue_locked`); whoever holds the send lock
drains it. The order in which messages were encoded is the order they go
out (a ``decref`` can never overtake the message that still names the
object). A drain takes everything queued so far and sends it in one write
(another thread may append meanwhile, so it takes a prefix). A drain that
must not wait (:meth:`SendQueue._write_queue_nowait`: a greenlet, or a
reader that answers a batch) leaves what the socket does not take at the
head of the queue for a later, blocking one. A failed write ends the
connection (:meth:`~syncpb.session.Session._lost`) and drops the queue.
"""

from __future__ import annotations

import socket as stdlib_socket
from typing import TYPE_CHECKING, Any, List, Sequence, Union

from .transport import send_pieces, send_pieces_nowait

if TYPE_CHECKING:  # pragma: no cover
    from .broker import Broker

__all__ = ["SendQueue"]

_DONTWAIT = int(stdlib_socket.MSG_DONTWAIT)  # an int: IntFlag arithmetic costs a microsecond
#: A piece of the send queue: the broker's bytes, or the unsent rest of one.
_Piece = Union[bytes, memoryview]


class SendQueue:
    """The writing side of :class:`~syncpb.session.Session` (a mixin: it
    uses the session's socket, broker, locks and ``_lost``)."""

    # provided by the session
    sock: Any
    broker: Broker
    _raw_sock: Any
    _lock: Any
    _send_mutex: Any
    _queue: List[_Piece]
    _lost: Any

    def _enqueue_locked(self) -> None:
        pieces = self.broker.pieces_to_send()
        if pieces:
            self._queue.extend(pieces)

    def _flush(self) -> None:
        """Write everything queued, in order (under the send lock)."""
        with self._send_mutex:
            self._write_queue()

    def _try_flush(self) -> None:
        """Flush only if no lock is busy (used from finalizers)."""
        if self._lock.acquire(False):
            try:
                self._enqueue_locked()
            finally:
                self._lock.release()
        if self._send_mutex.acquire(False):
            try:
                self._write_queue()
            finally:
                self._send_mutex.release()

    def _write_queue(self) -> None:
        """Send the queue in as few writes as possible (send lock held)."""
        queue = self._queue
        while queue:
            # everything queued so far goes out in one write (another thread
            # may append meanwhile: take a prefix)
            pieces = queue[:]
            del queue[:len(pieces)]
            if not self._write(pieces):
                queue.clear()
                return

    def _write_queue_nowait(self) -> None:
        """Send what the socket takes at once and leave the rest at the head
        of the queue (send lock held); never waits."""
        queue = self._queue
        sock = self._raw_sock if self._raw_sock is not None else self.sock
        while queue:
            try:
                if len(queue) == 1:  # the usual small message, written out
                    data = queue[0]
                    try:
                        sent = sock.send(data, _DONTWAIT)
                    except BlockingIOError:
                        sent = 0
                    if sent < len(data):
                        queue[0] = memoryview(data)[sent:]
                        return
                    del queue[0]  # (another thread may have appended meanwhile)
                else:  # large payloads go out from where they are (sendmsg)
                    pieces = queue[:]
                    del queue[:len(pieces)]
                    left = send_pieces_nowait(sock, pieces, _DONTWAIT)
                    if left:
                        queue[0:0] = left
                        return
            except OSError as exc:
                queue.clear()
                self._lost(f"write failed: {exc}", exc)
                return
            if self._raw_sock is None and getattr(sock, "backlog", None):
                # a wrapping stream (TLS) took it all but still holds bytes to
                # write: an empty piece makes the next blocking write flush them
                queue.insert(0, b"")
                return

    def _write(self, pieces: Sequence[_Piece]) -> bool:
        """Send ``pieces`` (send lock held); False if the connection ended."""
        try:
            if len(pieces) > 1:
                send_pieces(self.sock, pieces)
            elif self._raw_sock is None:  # a plain blocking socket
                self.sock.sendall(pieces[0])
            else:  # gevent: one direct send nearly always suffices
                data = pieces[0]
                try:
                    sent = self._raw_sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    self.sock.sendall(memoryview(data)[sent:])
        except OSError as exc:
            self._lost(f"write failed: {exc}", exc)
            return False
        return True
