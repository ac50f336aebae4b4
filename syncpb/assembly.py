"""A message arriving in pieces, read into one buffer (layer L1.93, sans-IO).

Theory of operation
-------------------
When a message arrives in pieces (TCP segments on a real network), the
broker (:mod:`syncpb.brokerstream`) keeps the pieces it is fed and frames
each one as it comes (:class:`~syncpb.banana.Framer`). A session that reads
into buffers does better: while the broker says so (``assemble``), it asks
for an :class:`Assembly` (``Broker.message_buffer``), whose
:meth:`Assembly.fill` reads straight into one buffer, each read into the
view just past the bytes read so far, until the framer says the message is
complete. It is given the reading function (a socket's ``recv_into``) and
never touches a socket itself: sans-IO.

Per piece that costs the read and a few operations: no bytes object, no
event, no lock, no call into the broker, and nothing copied but by the
read itself. The framer is called when a read comes back short or finds
nothing (the message may be complete: that must be known before waiting);
a read that fills its view is followed by another at once. The broker
then decodes the whole message once (``Broker.receive_buffered``). With
:attr:`Assembly.guess` (the broker sets it), the first short read hands
the bytes over unframed instead: the broker decodes them if the message
is complete, and frames them (:meth:`Assembly.catch_up`) if not.
Framing needs none of the broker's shared state, so a session fills
outside its lock; only the single reader of a connection touches an
assembly.

The buffer starts at the message's first byte, so the framer's offsets
(``long_strings``) are offsets into it. It has one size (:data:`SIZE`) and
never grows: fresh large buffers cost page faults (this VM: about 1 ms to
grow one from 32 KiB to 1 MiB) where a message that large gains little,
its pieces being few for its size. A message that outgrows it is
:meth:`~Assembly.spill`-ed to the broker, which goes on with chunks read
the plain way. Buffers go back to a small pool once copied out of, and no
buffer is held while nothing has been read (an idle connection keeps
none).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from .banana import cut_long_strings
from .errors import BananaError

__all__ = ["Assembly", "SIZE"]

#: The size of every buffer (a 17 KB message in 1,460-byte segments fits).
SIZE = 64 * 1024
#: A read is given at least this much room (or the read size, if smaller);
#: a buffer with less is full.
MIN_READ = 4096
#: Buffers kept for reuse (process-wide; list operations are atomic under
#: the GIL), so an assembly usually costs no allocation.
SPARES = 16
_spare: List[Tuple[bytearray, memoryview]] = []


class Assembly:
    """One message under way, read into one buffer.

    Args:
        framer: the broker's framer, already fed ``head`` (its state goes on).
        head: the message's bytes received so far (pieces; at most
            :attr:`HEAD_ROOM` bytes in all).
    """

    __slots__ = ("_framer", "_view", "filled", "_framed", "pieces", "end", "error", "full",
                 "guess")

    #: The most a message may have received before it is read into a buffer.
    HEAD_ROOM = SIZE // 2

    def __init__(self, framer: Any, head: List[bytes]) -> None:
        self._framer = framer
        #: where the message ends in the buffer, once complete
        self.end = -1
        #: the framing error that ended the message, if one did
        self.error: Optional[BananaError] = None
        #: the message outgrew the buffer (the broker then spills it)
        self.full = False
        #: hand the bytes over unframed at the next short read (see :meth:`fill`)
        self.guess = False
        #: reads (or pieces) the bytes came in
        self.pieces = len(head)
        #: bytes received so far (the message's, then possibly the next one's)
        self.filled = self._framed = 0  # (and those the framer has seen)
        self._view: Any = None  # taken at the first read
        if head:
            size = sum(map(len, head))
            self._take_spare()[:size] = b"".join(head)
            self.filled = self._framed = size

    @property
    def room(self) -> int:
        """Bytes that still fit."""
        return SIZE - self.filled

    def fill(self, recv_into: Callable[..., int], size: int, flags: int, nowait: int
             ) -> Optional[bool]:
        """Read into the buffer until the message is complete.

        Args:
            recv_into: reads into a writable view: ``recv_into(view)`` or
                ``recv_into(view, 0, flags)`` returns the bytes read, 0 at
                the end of the stream (a socket's method, or anything that
                acts like it).
            size: the most one read may take.
            flags: the flags of a read that may wait (all bytes read so
                far are framed, and the message goes on).
            nowait: the flags of a read that must not wait (some bytes are
                not framed yet: the message may be complete already).

        Returns:
            True once the message is complete (or has broken the framing:
            :attr:`error`, or outgrown the buffer: :attr:`full`): the
            broker takes it then; False at the end of the stream; None when
            there is nothing more to read now (``recv_into`` raised
            BlockingIOError) and the message goes on: call again once there
            is.

        Raises:
            OSError: what ``recv_into`` raised, but BlockingIOError.

        A read that fills the view it was given is followed by another at
        once, unframed (more is likely waiting); the bytes are framed when
        a read comes back short or finds nothing, or when the buffer is
        full, so a run of reads costs one call into the framer.

        With :attr:`guess` set, the first read that comes back short or
        finds nothing returns True with bytes still unframed (:attr:`end`
        stays -1, :attr:`unframed` is true) instead of framing them: the
        message is usually complete then, and the broker tries to decode
        it as it is, which makes the framer's pass over it unnecessary.
        If it is not complete, the broker frames those bytes
        (:meth:`catch_up`, which clears :attr:`guess`) and reading goes on
        as without it.
        """
        if self.full:
            return True
        least = MIN_READ if size > MIN_READ else size  # room a read is given
        if self._view is None:
            self._take_spare()
        # The loop keeps the offsets in locals (stored back on the way out):
        # it runs once per piece.
        view, filled, framed, reads = self._view, self.filled, self._framed, 0
        try:
            while True:
                room = SIZE - filled
                if room < least:  # full: the message goes on as chunks, or ends here
                    if framed < filled and self._frame(framed, filled):
                        return True
                    framed = filled
                    self.full = True
                    return True
                if room > size:
                    room = size
                try:
                    if framed < filled and nowait:
                        count = recv_into(view[filled:filled + room], 0, nowait)
                    elif flags and framed == filled:
                        count = recv_into(view[filled:filled + room], 0, flags)
                    else:
                        count = recv_into(view[filled:filled + room])
                except BlockingIOError:
                    if not filled:  # nothing yet: no buffer is held while waiting
                        self._give_back()
                        return None
                    if framed < filled and (self.guess or self._frame(framed, filled)):
                        return True
                    framed = filled
                    return None
                filled += count
                reads += 1
                if count < room:  # short: the socket may be empty (or at its end)
                    if framed < filled and (self.guess or self._frame(framed, filled)):
                        return True  # (at the end of the stream, the next read says so)
                    framed = filled
                    if not count:
                        return False
        finally:
            self.filled, self._framed = filled, framed
            self.pieces += reads

    def append(self, data: bytes) -> bool:
        """Copy ``data`` in (bytes read elsewhere; at most :attr:`room`) and
        frame it: True when the message is complete, as :meth:`fill`."""
        size, filled, framed = len(data), self.filled, self._framed
        if self._view is None:
            self._take_spare()
        self._view[filled:filled + size] = data
        self.filled = self._framed = filled + size
        self.pieces += 1
        return self._frame(framed, filled + size)

    @property
    def unframed(self) -> bool:
        """True when bytes were read that the framer has not seen (see
        :attr:`guess`)."""
        return self._framed < self.filled

    def peek(self) -> bytes:
        """A copy of the bytes read so far (for a decode that guesses the
        message is complete; the buffer stays)."""
        return self._view[:self.filled].tobytes() if self.filled else b""

    def release(self) -> None:
        """Done with the buffer (its bytes were taken with :meth:`peek`)."""
        self._give_back()

    def catch_up(self) -> bool:
        """Frame the bytes not framed yet and stop guessing: True when the
        message is complete (:attr:`end`) or broke the framing
        (:attr:`error`), as :meth:`fill`."""
        self.guess = False
        framed, filled = self._framed, self.filled
        self._framed = filled
        return framed < filled and self._frame(framed, filled)

    def take(self, long_strings: List[Tuple[int, int]]
             ) -> Tuple[bytes, Optional[Dict[int, bytes]], bytes]:
        """The complete message, its long strings cut out (see
        :func:`~syncpb.banana.cut_long_strings`) when the framer recorded
        any, and the bytes after it (the buffer goes back for reuse)."""
        end, view = self.end, self._view
        rest = view[end:self.filled].tobytes() if end < self.filled else b""
        strings: Optional[Dict[int, bytes]] = None
        if long_strings:
            message, strings = cut_long_strings([view[:end]], long_strings)
        else:
            message = view[:end].tobytes()
        self._give_back()
        return message, strings, rest

    def spill(self) -> bytes:
        """The bytes received of a message that outgrew the buffer (all
        framed: the broker goes on with them as its first chunk)."""
        data = self._view[:self.filled].tobytes() if self.filled else b""
        self._give_back()
        return data

    def _take_spare(self) -> memoryview:
        """Take a buffer (a spare one, or a new one); return its view."""
        try:
            self._view = _spare.pop()[1]
        except IndexError:
            self._view = memoryview(bytearray(SIZE))
        return self._view  # type: ignore[no-any-return]

    def _give_back(self) -> None:
        """Keep the buffer for another assembly (of any connection: it is
        only ever copied out of, never handed on)."""
        if self._view is not None and len(_spare) < SPARES:
            _spare.append((self._view.obj, self._view))
        self._view = None

    def _frame(self, start: int, stop: int) -> bool:
        """Frame the bytes read since the last time (``start`` to ``stop``):
        True when the message is complete (:attr:`end`) or broke the
        framing (:attr:`error`)."""
        try:
            end = self._framer.feed(self._view[start:stop])
        except BananaError as exc:
            self.error = exc
            return True
        if end is None:
            return False
        self.end = start + end
        return True
