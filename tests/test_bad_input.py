"""Bad input at the sans-IO broker: every violation is reported once, then silence.

A hostile or broken peer must never make :meth:`Broker.receive_data` raise:
each bad stream yields exactly one :class:`ProtocolViolation` event (the
owner then closes the connection), and afterwards the broker ignores
everything. Two cases first send the reply Twisted would send (a message to
an unknown object, a refused type in call arguments); with
``Limits(close_on_violation=False)`` they *only* reply, as Twisted does.

Every bad stream is fed whole, byte by byte, and followed by trailing data
(a valid call and the bad stream again): the outcome must not depend on
how the bytes are chunked. The expected reactions follow section 3.13 of
the wire reference.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, List, Optional

import pytest

from syncpb import banana
from syncpb.broker import (AnswerReceived, Broker, CallReceived, ErrorReceived, Limits,
                           ProtocolViolation, Ready)
from syncpb.errors import InsecureJelly, ProtocolError, SyncPBError
from syncpb.flavors import Referenceable, Root

from rawpeer import CHOICE_PB, OFFER, VERSION_6, failure_fields, message

LENIENT = Limits(close_on_violation=False)
E = banana.encode
FAILURE_TAG = b"twisted.spread.pb.CopyableFailure"


# ---------------------------------------------------------------- helpers

class Target(Root):
    def remote_add(self, a, b):
        return a + b

    def remote_echo(self, *args, **kwargs):
        return args, kwargs


class Proxy:
    """A proxy that behaves like a RemoteReference: dropping it releases its import."""

    def __init__(self, broker: Broker, record: Any) -> None:
        self.broker = broker
        self.record = record

    def __del__(self) -> None:
        self.broker.released.append(self.record)


def make_proxy(broker, record):
    return Proxy(broker, record)


def server_broker(limits: Limits = Limits(), handshake: bool = True) -> Broker:
    """A server broker; with ``handshake`` the client's choice and version are fed."""
    broker = Broker(root=Target(), limits=limits, proxy_factory=make_proxy)
    assert broker.data_to_send() == OFFER
    if handshake:
        assert broker.receive_data(CHOICE_PB + VERSION_6) == [Ready()]
        assert banana.Decoder().feed(broker.data_to_send()) == [[b"version", 6]]
    return broker


def client_broker(limits: Limits = Limits(), calls: int = 0) -> Broker:
    """A client broker after the handshake, with ``calls`` calls waiting (ids 1..calls)."""
    broker = Broker(is_client=True, limits=limits, proxy_factory=make_proxy)
    assert broker.receive_data(OFFER) == [Ready()]
    assert broker.receive_data(VERSION_6) == []
    for _ in range(calls):
        broker.call(b"root", "add", (1, 2))
    broker.data_to_send()
    assert broker.waiting_count == calls
    return broker


def decode(data: bytes) -> List[Any]:
    """Every complete top-level value in ``data`` (nothing may be left over)."""
    decoder = banana.Decoder(vocab=True)
    values = decoder.feed(data)
    assert decoder.buffered == 0, "broker output ends inside a message"
    return values


def nested(depth: int, head: bytes = b"tuple") -> List[Any]:
    """A Jelly value of ``depth`` nested containers: [head, [head, ... [head]]]."""
    value: List[Any] = [head]
    for _ in range(depth - 1):
        value = [head, value]
    return value


def call_args(*args: Any, rid: Any = 1, oid: Any = b"root", name: bytes = b"echo",
              kwargs: Any = None, answer_required: int = 1) -> bytes:
    return message(rid, oid, name, [b"tuple", *args], kwargs, answer_required)


def unicode(text: bytes) -> List[bytes]:
    return [b"unicode", text]


def raw_call(args: bytes, kwargs: bytes = b"\x01\x80\x05\x87") -> bytes:
    """``['message', 1, b'root', b'echo', 1, <args>, <kwargs>]`` with hand-made Banana."""
    return b"\x07\x80\x1a\x87\x01\x81\x04\x82root\x04\x82echo\x01\x81" + args + kwargs


GOOD_CALL = call_args(1, 2, rid=50, name=b"add")


def feed(broker: Broker, data: bytes, mode: str) -> List[Any]:
    """Feed ``data`` whole or byte by byte; return all events."""
    if mode == "whole":
        return broker.receive_data(data)
    events: List[Any] = []
    for i in range(len(data)):
        events.extend(broker.receive_data(data[i:i + 1]))
    return events


def violations(events: List[Any]) -> List[ProtocolViolation]:
    return [e for e in events if isinstance(e, ProtocolViolation)]


def assert_failure_reply(frame: Any, request_id: Any, wire_type: bytes, value: Optional[str] = None):
    assert frame[:2] == [b"error", request_id], frame
    fields = failure_fields(frame[2])
    assert fields["type"] == wire_type, fields
    if value is not None:
        assert fields["value"] == value, fields
    return fields


# ---------------------------------------------------------------- the catalogue

@dataclass
class Bad:
    """One bad stream and how a server broker must react to it."""

    id: str
    data: bytes
    reason: str  # regex, searched case-insensitively in str(violation.error)
    reply: Optional[str] = None  # None, "invalid-object" or "insecure"
    handshake: bool = True  # fed after the handshake (False: as the dialect choice)
    limits: Limits = field(default_factory=Limits)
    bug: Optional[str] = None  # a known syncpb bug: the case is xfail(strict)


MAX_DEPTH = Limits().max_depth
DEEP = MAX_DEPTH + 1  # one level more than the default limit

BAD_SERVER_INPUT = [
    # -- dialect choice (the first value a client sends)
    Bad("choice-unknown-dialect", b"\x04\x82abcd", r"dialect", handshake=False),
    Bad("choice-is-a-list", E([b"pb"], vocab=False), r"dialect", handshake=False),
    Bad("choice-is-an-int", b"\x05\x81", r"dialect", handshake=False),
    Bad("choice-vocab-token", b"\x13\x87", r"vocab", handshake=False),
    Bad("choice-http-request", b"GET / HTTP/1.1\r\nHost: example.org\r\n"
        b"User-Agent: curl/8.0\r\nAccept: */*\r\n\r\n", r"prefix", handshake=False),
    # -- Banana
    Bad("bad-type-byte", b"\x02\x80\x1d\x87\x01\x88", r"type byte"),
    Bad("garbage-high-bytes", b"\xde\xad\xbe\xef\x00\x01", r"type byte"),
    Bad("garbage-ascii-over-64-bytes", b"hello, this is not PB at all; " * 3, r"prefix"),
    Bad("oversized-string-header", banana.encode_prefix(banana.SIZE_LIMIT + 1) + b"\x82",
        r"size limit"),
    Bad("oversized-string-in-args",
        raw_call(b"\x02\x80\x0b\x87" + banana.encode_prefix(banana.SIZE_LIMIT + 1) + b"\x82abc",
                 b""), r"size limit"),
    Bad("oversized-list-header", banana.encode_prefix(banana.SIZE_LIMIT + 1) + b"\x80",
        r"size limit"),
    Bad("oversized-list-in-args",
        raw_call(banana.encode_prefix(banana.SIZE_LIMIT + 1) + b"\x80\x0b\x87", b""),
        r"size limit"),
    Bad("prefix-65-bytes", b"\x01" * 65 + b"\x81", r"prefix"),
    Bad("prefix-65-bytes-no-type-byte-yet", b"\x01" * 65, r"prefix"),
    Bad("prefix-65-bytes-in-message",
        b"\x02\x80\x1d\x87" + b"\x00" * 65 + b"\x81", r"prefix"),
    Bad("vocab-index-32", b"\x02\x80\x20\x87\x01\x81", r"vocab"),
    Bad("vocab-index-0", b"\x02\x80\x00\x87\x01\x81", r"vocab"),
    Bad("vocab-index-huge-in-args", raw_call(b"\x02\x80\x0b\x87\x7f\x7f\x87"), r"vocab"),
    # -- PB messages
    Bad("not-a-list", b"\x05\x81", r"list"),
    Bad("string-at-top-level", b"\x05\x82hello", r"list"),
    Bad("empty-top-level-list", b"\x00\x80", r"empty"),
    Bad("unknown-command", E([b"frobnicate", 1]), r"frobnicate|command"),
    Bad("command-is-a-list", E([[b"message"], 1]), r"command"),
    Bad("bad-version", E([b"version", 7]), r"version"),
    Bad("version-wrong-field-count", E([b"version", 6, 6]), r"field"),
    Bad("message-wrong-field-count", E([b"message", 1, b"root", b"echo"]), r"field"),
    Bad("answer-wrong-field-count", E([b"answer", 1]), r"field"),
    Bad("decref-wrong-field-count", E([b"decref"]), r"field"),
    Bad("answer-unknown-request-id", E([b"answer", 1, 3]), r"request id"),
    Bad("error-unknown-request-id", E([b"error", 7, [b"None"]]), r"request id"),
    Bad("decref-unknown-id", E([b"decref", 5]), r"decref"),
    Bad("decref-root", E([b"decref", b"root"]), r"decref"),
    Bad("method-name-not-utf8", call_args(name=b"\xff\xfeadd"), r"utf-?8"),
    Bad("method-name-is-unicode-list", message(1, b"root", [b"unicode", b"add"], [b"tuple"]),
        r"byte string|method"),
    # -- the two cases answered before closing
    Bad("message-to-unknown-object", call_args(1, 2, oid=99), r"unknown object|object id",
        reply="invalid-object"),
    Bad("refused-dotted-type-in-args", call_args([b"os.system", b"rm -rf /"]),
        r"os\.system|not allowed", reply="insecure"),
    Bad("refused-class-in-kwargs",
        call_args(kwargs=[b"dictionary", [unicode(b"x"), [b"class", b"os.Popen"]]]),
        r"class|not allowed|refused", reply="insecure"),
    # -- Jelly
    Bad("unicode-not-utf8", call_args(unicode(b"\xff\xfe")), r"utf-?8|unicode"),
    Bad("unicode-long-not-utf8", call_args(unicode(b"\xc3" * 200)), r"utf-?8|unicode"),
    Bad("unicode-kwarg-name-not-utf8",
        call_args(kwargs=[b"dictionary", [unicode(b"\xff"), 1]]), r"utf-?8|unicode"),
    Bad("jelly-empty-list", call_args([]), r"empty"),
    Bad("jelly-list-without-type-name", call_args([1, 2]), r"type name"),
    Bad("boolean-without-value", call_args([b"boolean"]), r"boolean"),
    Bad("boolean-two-values", call_args([b"boolean", b"true", b"true"]), r"boolean"),
    Bad("boolean-bad-text", call_args([b"boolean", b"maybe"]), r"boolean"),
    Bad("decimal-one-field", call_args([b"decimal", 314]), r"decimal"),
    Bad("decimal-not-integers", call_args([b"decimal", b"3", b"14"]), r"decimal"),
    Bad("reference-one-field", call_args([b"reference", 1]), r"reference"),
    Bad("reference-number-not-int", call_args([b"reference", b"x", [b"list"]]), r"reference"),
    Bad("reference-defined-twice",
        call_args([b"reference", 1, [b"list", [b"reference", 1, [b"list"]]]]), r"twice"),
    Bad("dereference-undefined", call_args([b"dereference", 5]), r"reference|cycle"),
    Bad("dereference-undefined-in-list", call_args([b"list", [b"dereference", 5]]), r"reference"),
    Bad("dereference-in-kwargs-undefined",
        call_args(kwargs=[b"dictionary", [unicode(b"a"), [b"dereference", 1]]]), r"reference"),
    Bad("dictionary-item-not-a-pair", call_args([b"dictionary", [1, 2, 3]]), r"pair"),
    Bad("dictionary-unhashable-key",
        call_args([b"dictionary", [[b"list", 1], 2]]), r"unhashable"),
    Bad("none-with-argument", call_args([b"None", 1]), r"None"),
    Bad("remote-without-id", call_args([b"remote"]), r"remote"),
    Bad("remote-id-not-int", call_args([b"remote", b"x"]), r"remote"),
    Bad("nested-deeper-than-custom-max-depth", call_args(nested(21)), r"nested|depth",
        limits=Limits(max_depth=20)),
    Bad("raw-nesting-deeper-than-max-depth",
        b"\x02\x80\x1d\x87" + b"\x01\x80" * DEEP + b"\x00\x80", r"nested|depth"),
    Bad("nested-deeper-than-default-max-depth", call_args(nested(DEEP)), r"nested|depth"),
    Bad("nested-lists-deeper-than-default-max-depth", call_args(nested(DEEP, b"list")),
        r"nested|depth"),
    Bad("set-of-unhashable", call_args([b"set", [b"list", 1]]), r"unhashable|set"),
    Bad("frozenset-of-unhashable", call_args([b"frozenset", [b"dictionary"]]),
        r"unhashable|set"),
    Bad("datetime-year-overflow",
        call_args([b"datetime", b"100000000000000000000 1 1 0 0 0 0"]), r"datetime|malformed"),
    Bad("date-year-overflow", call_args([b"date", b"100000000000000000000 1 1"]),
        r"date|malformed"),
    Bad("time-hour-overflow", call_args([b"time", b"100000000000000000000 0 0 0"]),
        r"time|malformed"),
    Bad("date-month-13", call_args([b"date", b"2024 13 1"]), r"date|malformed"),
    Bad("timedelta-overflow", call_args([b"timedelta", b"1000000000000 0 0"]),
        r"timedelta|malformed"),
    Bad("decimal-exponent-overflow", call_args([b"decimal", 1, 2**400]), r"decimal|malformed"),
    Bad("dereference-to-its-own-reference",
        call_args([b"reference", 1, [b"dereference", 1]]), r"reference"),
]


def _params(cases):
    out = []
    for case in cases:
        marks = [pytest.mark.xfail(reason=f"syncpb bug: {case.bug}", strict=True)] if case.bug else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def check_violation(case: Bad, events: List[Any]) -> ProtocolViolation:
    found = violations(events)
    assert len(found) == 1, f"expected exactly one ProtocolViolation, got {events!r}"
    assert events[-1] is found[0], f"events after the violation: {events!r}"
    assert not any(isinstance(e, CallReceived) for e in events), events
    error = found[0].error
    assert isinstance(error, SyncPBError), repr(error)
    assert re.search(case.reason, str(error), re.IGNORECASE), \
        f"reason {str(error)!r} does not match {case.reason!r}"
    return found[0]


def check_reply(case: Bad, data: bytes) -> None:
    frames = decode(data)
    if case.reply is None:
        assert frames == [], f"nothing may be sent before closing, got {frames!r}"
        return
    (frame,) = [f for f in frames if f[:1] == [b"error"]]
    if case.reply == "invalid-object":
        assert_failure_reply(frame, 1, b"twisted.spread.pb.Error", "Invalid Object ID")
    else:
        assert_failure_reply(frame, 1, b"twisted.spread.jelly.InsecureJelly")
    others = [f for f in frames if f is not frame]
    assert all(f[:1] == [b"decref"] for f in others), frames


def assert_dead(broker: Broker) -> None:
    """After a violation nothing is processed and nothing is sent."""
    assert broker.receive_data(GOOD_CALL) == []
    assert broker.receive_data(VERSION_6 + GOOD_CALL) == []
    assert broker.data_to_send() == b""
    assert not broker.ready
    with pytest.raises(ProtocolError):
        broker.call(b"root", "add", (1, 2))


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
@pytest.mark.parametrize("case", _params(BAD_SERVER_INPUT))
def test_server_reports_bad_input_once(case, mode):
    broker = server_broker(case.limits, case.handshake)
    events = feed(broker, case.data, mode)
    check_violation(case, events)
    check_reply(case, broker.data_to_send())
    assert_dead(broker)


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
@pytest.mark.parametrize("case", _params(BAD_SERVER_INPUT))
def test_server_ignores_data_after_bad_input(case, mode):
    """Trailing data in the same chunk (or later bytes) is never processed."""
    broker = server_broker(case.limits, case.handshake)
    events = feed(broker, case.data + GOOD_CALL + case.data + GOOD_CALL, mode)
    check_violation(case, events)
    check_reply(case, broker.data_to_send())
    assert_dead(broker)


def test_good_input_before_bad_input_is_processed():
    broker = server_broker()
    events = broker.receive_data(GOOD_CALL + E([b"frobnicate"]) + GOOD_CALL)
    assert [type(e) for e in events] == [CallReceived, ProtocolViolation]
    assert events[0].request_id == 50 and events[0].args == (1, 2)
    assert broker.data_to_send() == b""


def test_control_well_formed_neighbours_are_accepted():
    """The catalogue's well-formed neighbours give no violation, whole or byte by byte."""
    good = [
        call_args(unicode(b"caf\xc3\xa9"), [b"boolean", b"true"], [b"decimal", 314, -2],
                  [b"reference", 1, [b"list", [b"dereference", 1]]], nested(20),
                  [b"local", 999], [b"set", 1, 2], [b"unpersistable", b"why"]),
        call_args(kwargs=[b"dictionary", [unicode(b"a"), 1]]),
        raw_call(b"\x02\x80\x0b\x87\x05" + b"\x00" * 63 + b"\x81"),  # 64-byte prefix
        raw_call(b"\x02\x80\x0b\x87" + banana.encode_prefix(banana.SIZE_LIMIT) + b"\x82"
                 + b"z" * banana.SIZE_LIMIT),  # exactly the size limit
        E([b"didNotUnderstand", b"frobnicate"]),
        E([b"version", 6]),
    ]
    for mode in ("whole", "bytewise"):
        broker = server_broker()
        events: List[Any] = []
        for data in good:
            events.extend(feed(broker, data, mode) if len(data) < 5000 else
                          broker.receive_data(data))
        assert [type(e) for e in events] == [CallReceived] * 4, events
        first = events[0].args
        assert first[0] == "café" and first[1] is True and str(first[2]) == "3.14"
        assert first[3][0] is first[3] and first[5] is None and first[6] == {1, 2}
        assert events[1].kwargs == {"a": 1}
        assert events[2].args == (5,)
        assert len(events[3].args[0]) == banana.SIZE_LIMIT
        assert broker.data_to_send() == b""


# ---------------------------------------------------------------- lenient policy

@pytest.mark.parametrize("mode", ["whole", "bytewise"])
@pytest.mark.parametrize("case", _params([c for c in BAD_SERVER_INPUT if c.reply]))
def test_lenient_policy_only_replies(case, mode, caplog):
    broker = server_broker(LENIENT)
    with caplog.at_level(logging.WARNING, logger="syncpb"):
        events = feed(broker, case.data + GOOD_CALL, mode)
    assert not violations(events), events
    assert [type(e) for e in events] == [CallReceived] and events[0].request_id == 50
    check_reply(case, broker.data_to_send())
    assert any(r.name == "syncpb" and r.levelno >= logging.WARNING for r in caplog.records)
    # still alive: a second bad message is answered the same way
    assert feed(broker, case.data, mode) == []
    check_reply(case, broker.data_to_send())
    assert broker.ready


@pytest.mark.parametrize("limits", [Limits(), LENIENT], ids=["strict", "lenient"])
def test_no_reply_when_no_answer_is_required(limits):
    for data in (call_args(oid=99, answer_required=0),
                 call_args([b"os.system", b"x"], answer_required=0)):
        broker = server_broker(limits)
        events = broker.receive_data(data)
        assert len(violations(events)) == (1 if limits.close_on_violation else 0)
        assert decode(broker.data_to_send()) == []


@pytest.mark.parametrize("limits", [Limits(), LENIENT], ids=["strict", "lenient"])
def test_lenient_policy_still_closes_on_other_violations(limits):
    broker = server_broker(limits)
    events = broker.receive_data(E([b"decref", 12]) + GOOD_CALL)
    assert [type(e) for e in events] == [ProtocolViolation]
    assert_dead(broker)


# ---------------------------------------------------------------- request ids

ODD_IDS = [
    pytest.param(-1, id="negative"), pytest.param(0, id="zero"),
    pytest.param(2**80, id="long"),
] + [pytest.param(rid, id=name)  # refused as a violation
    for rid, name in ((b"x", "bytes"), (1.5, "float"), ([1], "list"))]


@pytest.mark.parametrize("rid", ODD_IDS)
@pytest.mark.parametrize("oid", [b"root", 99], ids=["root", "unknown-object"])
@pytest.mark.parametrize("limits", [Limits(), LENIENT], ids=["strict", "lenient"])
def test_odd_request_ids_never_raise(rid, oid, limits):
    """Twisted echoes any request id; syncpb may echo it or call it a violation,
    but neither receiving nor answering the call may raise."""
    broker = server_broker(limits)
    events = broker.receive_data(call_args(1, 2, rid=rid, oid=oid, name=b"add"))
    if violations(events) and not (oid == 99 and type(rid) is int):
        assert len(events) == 1  # refusing an odd id is fine
        return
    # an integer id to an unknown object, or an accepted odd id: the reply echoes it
    if oid == 99:
        frames = decode(broker.data_to_send())
        assert_failure_reply(frames[0], rid, b"twisted.spread.pb.Error", "Invalid Object ID")
        return
    (call,) = events
    assert call.request_id == rid
    broker.answer(call.request_id, 3)
    assert decode(broker.data_to_send()) == [[b"answer", rid, 3]]
    broker.fail(call.request_id, ValueError("x"))
    (frame,) = decode(broker.data_to_send())
    assert_failure_reply(frame, rid, b"builtins.ValueError", "x")


def test_refused_type_with_list_request_id_never_raises():
    broker = server_broker()
    events = broker.receive_data(call_args([b"os.system"], rid=[1]))
    assert len(violations(events)) == 1


def test_non_utf8_bytes_kwarg_names_are_not_silently_dropped():
    broker = server_broker()
    events = broker.receive_data(call_args(kwargs=[b"dictionary", [b"\xff", 1]]))
    delivered = [e for e in events if isinstance(e, CallReceived)]
    assert not (delivered and delivered[0].kwargs == {}), \
        "the call was delivered with its keyword argument silently removed"


# ---------------------------------------------------------------- client side

@dataclass
class BadAnswer:
    id: str
    data: bytes
    reason: str
    fails: Optional[int] = None  # request id failed by an ErrorReceived before closing
    error: Any = None  # the type that ErrorReceived carries
    bug: Optional[str] = None
    bug_modes: tuple = ("whole", "bytewise", "trailing")


BAD_ANSWERS = [
    BadAnswer("garbage", b"\xfa\xfb\xfc\xfd", r"type byte"),
    BadAnswer("answer-unknown-request-id", E([b"answer", 9, 3]), r"request id"),
    BadAnswer("answer-request-id-not-int", E([b"answer", b"1", 3]), r"request id"),
    BadAnswer("error-unknown-request-id", E([b"error", 9, [b"None"]]), r"request id"),
    BadAnswer("oversized-string-header",
              b"\x03\x80\x1b\x87\x01\x81" + banana.encode_prefix(banana.SIZE_LIMIT + 1) + b"\x82",
              r"size limit"),
    BadAnswer("answer-wrong-field-count", E([b"answer", 1, 3, 4]), r"field"),
    BadAnswer("bad-version", E([b"version", 5]), r"version"),
    BadAnswer("unregistered-copy-tag-in-answer", E([b"answer", 1, [b"pkg.Thing", [b"dictionary"]]]),
              r"pkg|not allowed|undecodable", fails=1, error=InsecureJelly),
    BadAnswer("refused-type-in-error", E([b"error", 2, [b"class", b"os.Popen"]]),
              r"class|undecodable|refused", fails=2, error=InsecureJelly),
    BadAnswer("malformed-jelly-in-answer", E([b"answer", 1, [b"boolean"]]), r"boolean",
              fails=1, error=SyncPBError),
    BadAnswer("undefined-dereference-in-answer", E([b"answer", 2, [b"dereference", 3]]),
              r"reference", fails=2, error=SyncPBError),
    BadAnswer("bad-vocab-index-in-answer", b"\x03\x80\x1b\x87\x01\x81\x02\x80\x50\x87\x01\x81",
              r"vocab"),
    BadAnswer("nested-answer-deeper-than-max-depth", E([b"answer", 1, nested(DEEP)]),
              r"nested|depth", fails=1, error=SyncPBError),
]


@pytest.mark.parametrize("case,mode", [
    pytest.param(c, mode, id=f"{c.id}-{mode}",
                 marks=[pytest.mark.xfail(reason=f"syncpb bug: {c.bug}", strict=True)]
                 if c.bug and mode in c.bug_modes else [])
    for c in BAD_ANSWERS for mode in ("whole", "bytewise", "trailing")])
def test_client_with_waiting_calls_reports_bad_answer(case, mode):
    """Each waiting call is settled exactly once: by an event or by connection_lost()."""
    broker = client_broker(calls=3)
    data = case.data + (E([b"answer", 3, 7]) + case.data if mode == "trailing" else b"")
    events = feed(broker, data, "bytewise" if mode == "bytewise" else "whole")
    found = violations(events)
    assert len(found) == 1 and events[-1] is found[0], events
    assert isinstance(found[0].error, SyncPBError)
    assert re.search(case.reason, str(found[0].error), re.IGNORECASE), found[0].error
    settled = [e for e in events if isinstance(e, (AnswerReceived, ErrorReceived))]
    if case.fails is not None:
        assert len(settled) == 1 and isinstance(settled[0], ErrorReceived)
        assert settled[0].request_id == case.fails
        assert isinstance(settled[0].error, case.error), settled[0].error
    else:
        assert settled == []
    assert broker.data_to_send() == b""
    assert broker.receive_data(E([b"answer", 3, 7])) == []
    lost = broker.connection_lost()
    assert sorted(lost + [e.request_id for e in settled]) == [1, 2, 3]
    assert broker.waiting_count == 0


MALFORMED_FAILURE_STATES = {
    "parents-int": [b"dictionary", [unicode(b"parents"), 5]],
    "parents-none": [b"dictionary", [unicode(b"parents"), [b"None"]]],
    "type-int": [b"dictionary", [unicode(b"type"), 7], [unicode(b"value"), unicode(b"v")]],
    "value-list": [b"dictionary", [unicode(b"value"), [b"list", 1]]],
    "state-not-a-dict": [b"list", 1, 2],
    "empty-state": [b"dictionary"],
}


@pytest.mark.parametrize("state", MALFORMED_FAILURE_STATES.values(),
                         ids=MALFORMED_FAILURE_STATES.keys())
def test_malformed_failure_state_never_raises(state):
    """A CopyableFailure whose state is nonsense: Twisted would drop the connection;
    syncpb may do the same or build some exception from it, but never raise."""
    failure = [FAILURE_TAG, state]
    server = server_broker()
    events = server.receive_data(call_args(failure))
    assert len(events) == 1
    if isinstance(events[0], CallReceived):
        assert isinstance(events[0].args[0], BaseException)
    else:
        assert isinstance(events[0], ProtocolViolation)
    client = client_broker(calls=2)
    events = client.receive_data(E([b"error", 1, failure]) + E([b"answer", 2, 5]))
    assert isinstance(events[0], (ErrorReceived, ProtocolViolation)), events
    if isinstance(events[0], ErrorReceived):
        assert events[0].request_id == 1 and isinstance(events[0].error, BaseException)
        assert events[1:] == [AnswerReceived(2, 5)]
    else:
        assert events[1:] == [] and client.connection_lost() == [1, 2]


@pytest.mark.parametrize("offer,reason", [
    (E(b"pb", vocab=False), r"offer"),
    (E([], vocab=False), r"offer"),
    (E([b"json", b"xml"], vocab=False), r"dialect"),
    (b"\x13\x87", r"vocab"),
    (b"\xff", r"type byte"),
], ids=["bare-string", "empty-list", "no-common-dialect", "vocab-token", "bad-byte"])
def test_client_rejects_bad_offer(offer, reason):
    broker = Broker(is_client=True)
    events = broker.receive_data(offer + OFFER)
    assert len(events) == 1 and isinstance(events[0], ProtocolViolation), events
    assert re.search(reason, str(events[0].error), re.IGNORECASE), events[0].error
    assert broker.data_to_send() == b""
    assert not broker.ready


@pytest.mark.parametrize("split", range(1, len(E([b"answer", 1, [b"unicode", b"abc"]]))))
def test_control_answer_split_anywhere_is_accepted(split):
    """An answer cut at any byte by TCP is still one answer (no false violation)."""
    data = E([b"answer", 1, [b"unicode", b"abc"]])
    broker = client_broker(calls=1)
    events = broker.receive_data(data[:split]) + broker.receive_data(data[split:])
    assert events == [AnswerReceived(1, "abc")]


# ---------------------------------------------------------------- import/export tables

def test_refused_type_after_remote_reference_releases_the_import_lenient():
    """The peer sent ['remote', 5] once, so it must get exactly one decref back,
    even though the message was refused (Twisted's RemoteReference would be
    collected and decref'd the same way)."""
    broker = server_broker(LENIENT)
    events = broker.receive_data(call_args([b"remote", 5], [b"os.system", b"x"]))
    assert events == []
    frames = decode(broker.data_to_send())
    assert frames[0][:2] == [b"error", 1]
    assert frames[1:] == [[b"decref", 5]]
    assert broker.import_count == 0 and not broker.released
    # a later, good message importing the same id counts afresh
    (call,) = broker.receive_data(call_args([b"remote", 5], rid=2))
    assert broker.import_count == 1
    assert decode(broker.data_to_send()) == []
    del call
    assert decode(broker.data_to_send()) == [[b"decref", 5]]
    assert broker.import_count == 0


@pytest.mark.parametrize("bad_tail", [
    [b"os.system", b"x"],            # refused: replied, then closed
    [b"unicode", b"\xff"],           # malformed: closed
    [b"dereference", 9],             # undefined reference: closed
], ids=["refused", "bad-unicode", "undefined-dereference"])
def test_refused_message_with_remote_reference_strict(bad_tail):
    broker = server_broker()
    events = broker.receive_data(call_args([b"remote", 5], [b"remote", 6], bad_tail))
    assert len(violations(events)) == 1
    frames = decode(broker.data_to_send())
    assert all(f[:1] == [b"error"] for f in frames), "no decref on a dead connection"
    broker.connection_lost()
    assert broker.import_count == 0 and broker.export_count == 0


def test_unknown_object_message_imports_nothing():
    """Like Twisted, the arguments of a message to an unknown object are never
    unjellied: no proxy, no import, no decref owed."""
    broker = server_broker(LENIENT)
    broker.receive_data(call_args([b"remote", 5], oid=77))
    frames = decode(broker.data_to_send())
    assert [f[:2] for f in frames] == [[b"error", 1]]
    assert broker.import_count == 0


@pytest.mark.parametrize("split", [8, 20, 30])
def test_import_split_across_chunks_is_counted_once(split):
    broker = server_broker()
    data = call_args([b"remote", 5], [b"remote", 5], unicode(b"padding"))
    first = broker.receive_data(data[:split])
    decode(broker.data_to_send())
    (call,) = first + broker.receive_data(data[split:])
    assert call.args[0] is call.args[1]
    assert broker.import_count == 1
    assert decode(broker.data_to_send()) == []
    del call, first
    assert decode(broker.data_to_send()) == [[b"decref", 5], [b"decref", 5]]
    assert broker.import_count == 0


class Thing(Referenceable):
    def remote_ping(self):
        return "pong"


def test_exports_survive_a_violation_only_until_connection_lost():
    broker = server_broker()
    (call,) = broker.receive_data(call_args(rid=1))
    broker.answer(call.request_id, Thing())
    (frame,) = decode(broker.data_to_send())
    assert frame == [b"answer", 1, [b"remote", 1]]
    assert broker.export_count == 1
    # a double decref is a violation; the export table is released on loss
    events = broker.receive_data(E([b"decref", 1]) + E([b"decref", 1]))
    assert len(violations(events)) == 1
    broker.connection_lost()
    assert broker.export_count == 0 and broker.import_count == 0


# ---------------------------------------------------------------- per-connection limits

def test_size_limit_is_per_connection():
    big = b"x" * (banana.SIZE_LIMIT + 1)
    data = raw_call(b"\x02\x80\x0b\x87" + banana.encode_prefix(len(big)) + b"\x82" + big)
    default, roomy = server_broker(), server_broker(Limits(size_limit=2 * banana.SIZE_LIMIT))
    # interleave the two connections chunk by chunk
    events_default: List[Any] = []
    events_roomy: List[Any] = []
    for i in range(0, len(data), 4096):
        events_default += default.receive_data(data[i:i + 4096])
        events_roomy += roomy.receive_data(data[i:i + 4096])
    assert [type(e) for e in events_default] == [ProtocolViolation]
    assert [type(e) for e in events_roomy] == [CallReceived]
    assert events_roomy[0].args == (big,)
    # the roomy connection keeps working after its neighbour died
    assert [type(e) for e in roomy.receive_data(GOOD_CALL)] == [CallReceived]
    assert default.receive_data(GOOD_CALL) == []


@pytest.mark.parametrize("size", [1000, 100])
def test_small_size_limit_refuses_what_the_default_accepts(size):
    data = call_args(b"y" * size)
    tight, default = server_broker(Limits(size_limit=size - 1)), server_broker()
    assert [type(e) for e in tight.receive_data(data)] == [ProtocolViolation]
    assert [type(e) for e in default.receive_data(data)] == [CallReceived]
    assert [type(e) for e in default.receive_data(call_args(b"y" * size, rid=2))] == [CallReceived]


def test_prefix_limit_is_per_connection():
    padded_five = b"\x05" + b"\x00" * 69 + b"\x81"  # 70 prefix bytes, value 5
    data = raw_call(b"\x02\x80\x0b\x87" + padded_five)
    default, long_prefix = server_broker(), server_broker(Limits(prefix_limit=70))
    assert [type(e) for e in default.receive_data(data)] == [ProtocolViolation]
    (call,) = long_prefix.receive_data(data)
    assert call.args == (5,)


def test_max_depth_is_per_connection():
    data = call_args(nested(30))
    shallow, default = server_broker(Limits(max_depth=29)), server_broker()
    assert [type(e) for e in shallow.receive_data(data)] == [ProtocolViolation]
    assert [type(e) for e in default.receive_data(data)] == [CallReceived]
    assert [type(e) for e in server_broker(Limits(max_depth=31)).receive_data(data)] == [CallReceived]


def deep_value(head: bytes, depth: int) -> List[Any]:
    """A Jelly value ``depth`` containers deep; the innermost one is a ``head``."""
    value: List[Any] = [head, 1] if head in (b"set", b"frozenset") else [head]
    wrapper = head if head in (b"tuple", b"list") else b"tuple"
    for _ in range(depth - 1):
        value = [wrapper, value]
    return value


@pytest.mark.parametrize("head", [b"tuple", b"list", b"set", b"dictionary"])
def test_nesting_up_to_the_default_max_depth_is_accepted(head):
    """Limits().max_depth is a promise: that deep is decoded, on both sides."""
    # the argument tuple is one level itself
    (call,) = server_broker().receive_data(call_args(deep_value(head, MAX_DEPTH - 1)))
    assert isinstance(call, CallReceived)
    client = client_broker(calls=1)
    (answer,) = client.receive_data(E([b"answer", 1, deep_value(head, MAX_DEPTH)]))
    assert isinstance(answer, AnswerReceived)


def test_a_violation_does_not_affect_another_broker():
    a, b = server_broker(), server_broker()
    assert [type(e) for e in a.receive_data(b"\xff")] == [ProtocolViolation]
    for rid in range(1, 4):
        (call,) = b.receive_data(call_args(1, 2, rid=rid, name=b"add"))
        b.answer(call.request_id, call.method(*call.args))
        assert decode(b.data_to_send()) == [[b"answer", rid, 3]]
    assert a.receive_data(GOOD_CALL) == [] and a.data_to_send() == b""
