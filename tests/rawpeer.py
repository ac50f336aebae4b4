"""Hand-driven PB peers for the bad-input tests.

:class:`RawPeer` is a hostile *client*: a plain socket that completes the
dialect handshake by hand and then sends whatever bytes a test wants.
:class:`HostileServer` is a hostile *server*: a plain listening socket whose
single connection is driven by a test-supplied script in a thread.

Both read replies with :class:`syncpb.banana.Decoder` and never sleep: every
wait is a socket timeout, so a test that expects a close or a reply fails
within a bounded time instead of hanging.
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable, List, Optional, Tuple

from syncpb import banana
from syncpb.transport import parse_address

__all__ = [
    "CHOICE_PB",
    "VERSION_6",
    "OFFER",
    "WAIT",
    "Closed",
    "RawPeer",
    "HostileServer",
    "message",
    "failure_fields",
    "read_choice_and_version",
]

#: The client's dialect choice: the bare string 'pb'.
CHOICE_PB = b"\x02\x82pb"
#: ``['version', 6]`` in the pb dialect.
VERSION_6 = b"\x02\x80\x13\x87\x06\x81"
#: Twisted's dialect offer ``['pb', 'none']``.
OFFER = banana.offer()
#: Upper bound of every wait, in seconds.
WAIT = 10.0


class Closed(Exception):
    """The other side closed the connection (EOF or reset)."""


def message(request_id: Any, oid: Any, name: bytes, args: Any, kwargs: Any = None,
            answer_required: int = 1, command: bytes = b"message") -> bytes:
    """A ``message`` (or ``cachemessage``) frame built from plain Banana trees
    (Jelly written by hand)."""
    if kwargs is None:
        kwargs = [b"dictionary"]
    return banana.encode([command, request_id, oid, name, answer_required, args, kwargs])


def failure_fields(payload: Any) -> dict:
    """The state of a decoded CopyableFailure tree, keyed by str.

    ``payload`` is ``[b'twisted.spread.pb.CopyableFailure', ['dictionary', ...]]``;
    unicode values are turned into str.
    """
    assert isinstance(payload, list) and payload[0] == b"twisted.spread.pb.CopyableFailure", payload
    state = payload[1]
    assert state[0] == b"dictionary", state
    fields = {}
    for key, value in state[1:]:
        assert key[0] == b"unicode", key
        if isinstance(value, list) and value[:1] == [b"unicode"]:
            value = value[1].decode("utf-8")
        fields[key[1].decode("utf-8")] = value
    return fields


class _Stream:
    """A socket plus a Banana decoder; the common part of both peers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(WAIT)
        self.decoder = banana.Decoder(vocab=True, size_limit=2**31, prefix_limit=2**16)
        self.messages: List[Any] = []  # decoded, not yet taken
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_more(self, timeout: float) -> None:
        if self.eof:
            raise Closed()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"nothing received within {timeout} s") from None
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            raise Closed()
        self.messages.extend(self.decoder.feed(data))

    def read_message(self, timeout: float = WAIT) -> Any:
        """The next decoded top-level value.

        Raises:
            Closed: the connection ended first.
            AssertionError: nothing arrived within ``timeout``.
        """
        while not self.messages:
            self._recv_more(timeout)
        return self.messages.pop(0)

    def read_until_closed(self, timeout: float = WAIT) -> List[Any]:
        """Every value received until the other side closes.

        Raises:
            AssertionError: the connection was still open after ``timeout``
                (each read may wait that long).
        """
        while True:
            try:
                self._recv_more(timeout)
            except Closed:
                out, self.messages = self.messages, []
                return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class RawPeer(_Stream):
    """A hostile PB client on a plain socket.

    Args:
        address: the server's ``tcp://host:port``.
    """

    def __init__(self, address: str) -> None:
        target = parse_address(address)
        sock = socket.create_connection((target.host, target.port), timeout=WAIT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock)
        self.next_id = 0

    def __enter__(self) -> "RawPeer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def read_offer(self) -> Any:
        """Read the server's dialect offer (a vocabulary-free list)."""
        offer = self.read_message()
        assert offer == [b"pb", b"none"], offer
        return offer

    def handshake(self) -> "RawPeer":
        """Choose 'pb', send our version and read the server's version."""
        self.read_offer()
        self.send(CHOICE_PB + VERSION_6)
        version = self.read_message()
        assert version == [b"version", 6], version
        return self

    def call(self, name: bytes, *args: Any) -> int:
        """Send a well-formed call of ``root.name`` with plain (int/bytes) args."""
        self.next_id += 1
        self.send(message(self.next_id, b"root", name, [b"tuple", *args]))
        return self.next_id

    def call_and_read(self, name: bytes, *args: Any) -> Any:
        """Make a call and return the decoded answer frame (skipping decrefs)."""
        request_id = self.call(name, *args)
        while True:
            reply = self.read_message()
            if reply[:1] == [b"decref"]:
                continue
            assert reply[:2] in ([b"answer", request_id], [b"error", request_id]), reply
            return reply


class HostileServer:
    """A listening socket whose one connection runs ``script(stream)`` in a thread.

    The script gets a :class:`_Stream` (``send``, ``read_message``,
    ``read_until_closed``) before anything was sent; it usually starts with
    ``stream.send(OFFER)``. A script that must keep the connection open
    waits on :attr:`release` (set by :meth:`close`). Whatever the script
    returns is kept in :attr:`result`; an exception in it is re-raised by
    :meth:`join`.
    """

    def __init__(self, script: Callable[["_Stream"], Any]) -> None:
        self.script = script
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(WAIT)
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.stream: Optional[_Stream] = None
        self.release = threading.Event()  # set by the test to let the script finish
        self._thread = threading.Thread(target=self._run, name="hostile-server", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            self.stream = _Stream(conn)
            self.result = self.script(self.stream)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout: float = WAIT) -> Any:
        """Wait for the script to end; return its result or raise its error."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "hostile server script did not finish"
        if self.error is not None:
            raise self.error
        return self.result

    def close(self) -> None:
        self.release.set()
        self._thread.join(WAIT)
        if self.stream is not None:
            self.stream.close()
        self.listener.close()

    def __enter__(self) -> "HostileServer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def read_choice_and_version(stream: "_Stream") -> Tuple[Any, Any]:
    """Server side of the handshake after the offer: the choice and the version."""
    choice = stream.read_message()
    version = stream.read_message()
    return choice, version
