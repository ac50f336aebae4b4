"""Cutting a byte stream into messages: the broker's receiving side
(layer L1.96, sans-IO).

Theory of operation
-------------------
:class:`StreamReceiver` is mixed into :class:`~syncpb.broker.Broker`: it
takes received bytes (from :meth:`~syncpb.brokercore.BrokerCore.receive_data`,
which decodes a message that came whole itself), finds where each message
ends and hands each whole message to the broker's decoder (``_handle``),
which appends the events.

* Most messages arrive whole, so the broker first decodes straight from
  the received chunk.
* If the chunk ends inside a message, the chunks are kept as they are and
  a :class:`~syncpb.banana.Framer` scans each one once as it arrives
  (skipping string payloads by count) until it knows where the message
  ends; the chunks are then joined once (long strings cut out on their
  own, :func:`~syncpb.banana.cut_long_strings`) and decoded.
* A session that reads into buffers does better: while :attr:`assemble`
  says so, it reads the next bytes straight into the broker's buffer
  (:meth:`~StreamReceiver.message_buffer`, an
  :class:`~syncpb.assembly.Assembly`, framed as it fills) and hands the
  whole message over once (:meth:`~StreamReceiver.receive_buffered`).
  Bytes fed with ``receive_data`` meanwhile go into the same buffer. The
  buffer never grows: a message that outgrows it (a large one, whose
  pieces cost little each) goes on as chunks, read the plain way.
* A read into the buffer that comes back short usually ends the message
  (the sender wrote it whole; the reader caught up). So at the first short
  read the buffer is handed over unframed and decoded as it is, as a
  message that came whole is (:meth:`~StreamReceiver._guess`); only if it
  goes on, or fails to decode, are those bytes framed, and the message
  goes on framed as it fills. One guess per message at most: a wasted
  decode of what had arrived by then, against the framer's pass over
  every message (a 17 KB message of small records: about 6 µs of 55).
* A connection that splits one message likely splits the next: once a
  message that fits the buffer has come in pieces the next one is framed
  before it is decoded (decoding its first piece would be wasted) and read
  into a buffer; a message that comes whole turns both off again. A larger
  message does not turn them on: it would never come whole into the buffer,
  so every message after it would be read in pieces too.

A message is framed before its decoding error counts, so that the verdict
never depends on how the bytes were cut: a framing error anywhere in it
wins, and a message not complete yet waits for its end. Every byte is
scanned and copied a bounded number of times whatever the chunking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from . import banana
from .assembly import SIZE as ASSEMBLY_SIZE
from .assembly import Assembly
from .brokercore import _DEAD
from .errors import InsecureJelly, ProtocolError
from .jelly import Incomplete

__all__ = ["StreamReceiver"]

#: A message assembled from pieces and larger than this is not kept by the
#: reader until the next one (a message that came whole is the read's own).
KEEP_AFTER = 64 * 1024

Event = Any


class StreamReceiver:
    """The receiving side of :class:`~syncpb.broker.Broker` (a mixin)."""

    if not TYPE_CHECKING:
        # No storage of its own: its attributes (_chunks, _framer, _assembly,
        # assemble, _frame_first) are slots of the broker, as two bases with slots cannot
        # both have some. (mypy, told of no slots, checks the attributes as
        # declared below and in _init_stream.)
        __slots__ = ()

    _state: int
    _reader: Any
    _long_strings: Optional[Dict[int, bytes]]
    security: Any
    _handle: Callable[[bytes, int, List[Event]], int]  # Broker._handle: decode one message
    _die: Callable[[BaseException, List[Event]], None]  # Broker._die

    def _init_stream(self, limits: Any) -> None:
        self._chunks: List[bytes] = []  # the message under way, as received
        self._framer = banana.Framer(limits.size_limit, limits.prefix_limit)
        self._assembly: Optional[Assembly] = None  # or read into one buffer
        #: True when the next bytes had better be read into
        #: :meth:`message_buffer`: the message under way fits its buffer,
        #: or the last one came in pieces (so will the next, likely).
        self.assemble = False
        self._frame_first = False  # the last message came in pieces

    def _forget_stream(self) -> None:
        """The connection is over: drop what was received of a message."""
        self._chunks, self._assembly = [], None
        self.assemble = self._frame_first = False

    @property
    def message_under_way(self) -> bool:
        """True while a message has begun to arrive and is not complete yet."""
        return bool(self._chunks) or (self._assembly is not None and self._assembly.filled > 0)

    def message_buffer(self) -> Assembly:
        """The buffer to read the next bytes into while :attr:`assemble`
        (see :class:`~syncpb.assembly.Assembly`): the message under way, or
        the next one. Once it is complete, :meth:`receive_buffered` takes it.
        Framing only: the caller need not hold the lock guarding the broker."""
        assembly = self._assembly
        if assembly is None:
            head = self._chunks
            if head and sum(map(len, head)) > Assembly.HEAD_ROOM:  # (bytes fed meanwhile)
                assembly = self._assembly = Assembly(self._framer, [])
                assembly.full = True  # it goes on as chunks: the broker says so when given it
            else:
                assembly = self._assembly = Assembly(self._framer, head)
                assembly.guess = True  # decoded without framing if complete at a short read
                self._chunks = []
        return assembly

    def receive_buffered(self) -> List[Event]:
        """Decode the message :meth:`message_buffer` completed and the bytes
        read after it; return the events, as :meth:`receive_data` does."""
        events: List[Event] = []
        if self._state == _DEAD or self._assembly is None:
            return events
        try:
            self._receive_assembled(events)
        except (ProtocolError, InsecureJelly) as exc:
            self._die(exc, events)
        except RecursionError:
            self._die(ProtocolError("value nested too deeply to decode"), events)
        return events

    def _receive(self, data: bytes, events: List[Event], pos: int = 0) -> None:
        assembly = self._assembly
        if assembly is not None:  # bytes read elsewhere: into the buffer too
            if not assembly.full and assembly.room >= len(data):
                if assembly.append(data):
                    self._receive_assembled(events)
                return
            self._spill(assembly)  # (then on as chunks)
        if self._chunks:  # a message is under way: frame it, decode it once complete
            end = self._framer.feed(data)
            if end is None:
                self._chunks.append(data)
                return
            self._chunks.append(data[:end])
            # Only a message that fits a buffer turns buffered reading on
            # for the next (see _framed): a larger one could never come
            # whole into it, so every message after it would be read in
            # pieces too (a 256 KiB echo ran at half speed that way).
            fits = sum(map(len, self._chunks)) <= ASSEMBLY_SIZE
            long_strings = self._framer.long_strings
            if long_strings:
                message, self._long_strings = banana.cut_long_strings(self._chunks, long_strings)
            else:
                message = b"".join(self._chunks)
            self._chunks, data = [], data[end:]
            self._framed(message, fits, events)
        while pos < len(data) and self._state != _DEAD:
            if self._frame_first:  # the last message came in pieces: so may this one
                rest = data[pos:] if pos else data
                end = self._framer.feed(rest)
                if end is None:
                    self._keep(rest)
                    return
                self._framer.reset()
                self._frame_first = self.assemble = False  # it came whole
                try:
                    if self._handle(data, pos, events) != pos + end:
                        raise ProtocolError("message decoded to a different length than framed")
                except Incomplete:
                    raise ProtocolError("decoder and framer disagree on a message end") from None
                pos += end
                continue
            try:
                pos = self._handle(data, pos, events)
            except Incomplete:
                self._incomplete(data, pos)
                return
            except (ProtocolError, InsecureJelly):
                if self._wait_for_end(data, pos):
                    return
                raise

    def _incomplete(self, data: bytes, pos: int) -> None:
        """The message at ``pos`` goes on past ``data``: keep it, framed."""
        rest = data[pos:] if pos else data
        if self._framer.feed(rest) is not None:
            raise ProtocolError("decoder and framer disagree on a message end")
        self._keep(rest)

    def _wait_for_end(self, data: bytes, pos: int) -> bool:
        """The message at ``pos`` failed to decode: True if it is not
        complete yet (it is kept; its error comes back once it is), False
        if it is (the error stands).

        A message is framed before it is decoded, so that the verdict never
        depends on how the bytes were cut: a framing error anywhere in it
        wins, and a message not complete yet waits for its end."""
        rest = data[pos:] if pos else data
        if self._framer.feed(rest) is None:
            self._keep(rest)
            return True
        self._framer.reset()
        return False

    def _keep(self, head: bytes) -> None:
        """A message begins with ``head`` (framed) and goes on: keep it; its
        rest is read into a buffer if it fits one, else as chunks."""
        self._chunks = [head]
        self.assemble = len(head) <= Assembly.HEAD_ROOM

    def _spill(self, assembly: Assembly) -> None:
        """The message under way outgrew its buffer: it goes on as chunks."""
        data = assembly.spill()
        if data:
            self._chunks.append(data)
        self._assembly = None
        self.assemble = False

    def _receive_assembled(self, events: List[Event]) -> None:
        assembly = self._assembly
        assert assembly is not None
        if assembly.error is not None:
            raise assembly.error
        if assembly.end < 0:  # not complete yet
            if assembly.guess and assembly.unframed:
                self._guess(assembly, events)
            elif assembly.full:
                self._spill(assembly)
            return
        self._assembly = None
        message, self._long_strings, rest = assembly.take(self._framer.long_strings)
        self._framed(message, assembly.pieces > 1, events)
        if rest and self._state != _DEAD:
            self._receive(rest, events)

    def _guess(self, assembly: Assembly, events: List[Event]) -> None:
        """A read came back short with bytes not framed yet: the message is
        usually complete then, so decode what was read as it is (as a
        message that came whole is, in :meth:`receive_data`). If it goes on
        past those bytes, or fails to decode, frame them and go on as
        usual: a decoding error counts only once the framer has seen the
        whole message, whatever the guess. At most one guess per message."""
        data = assembly.peek()
        try:
            pos = self._handle(data, 0, events)
        except (Incomplete, ProtocolError, InsecureJelly) as exc:
            # Frame what was read (the buffer cannot be full here: fill
            # frames a full buffer itself). Not complete: wait for more.
            if assembly.catch_up():  # complete, or a framing error
                if assembly.error is not None:
                    raise assembly.error from None  # a framing error wins
                if isinstance(exc, Incomplete):
                    raise ProtocolError("decoder and framer disagree on a message end") from None
                raise  # the message is complete: its decoding error stands
            return
        self._assembly = None
        assembly.release()
        if self._state == _DEAD:  # (the message ended the connection)
            return
        self._framer.reset()
        self._frame_first = self.assemble = assembly.pieces > 1
        if pos < len(data):
            self._receive(data[pos:], events)

    def _framed(self, message: bytes, pieces: bool, events: List[Event]) -> None:
        """Decode a message framed and joined (``pieces``: it came in
        several and fitted a buffer, so the next is framed first and read
        into one)."""
        self._framer.reset()
        self._frame_first = self.assemble = pieces
        try:
            if self._handle(message, 0, events) != len(message):
                raise ProtocolError("message decoded to a different length than framed")
        except Incomplete:  # the framer saw a whole message; its values run past it
            raise ProtocolError("decoder and framer disagree on a message end") from None
        finally:  # an assembled message may be large: keep nothing of it
            if self._reader is not None and (self._long_strings or len(message) > KEEP_AFTER):
                self._reader.restart(b"", 0, self.security, None)
            self._long_strings = None

