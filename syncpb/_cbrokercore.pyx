# cython: language_level=3
"""The broker's core compiled: the twin of syncpb/brokercore.py (layer L1.95).

Theory of operation
-------------------
The same class as :class:`syncpb.brokercore.BrokerCore`, method for method
and line for line, so that both give the same events, bytes and errors
(tests/test_brokercore.py compares them; the broker suites run on both).
What compiling buys is the state: here the attributes every call touches
are C fields of the instance, typed where their type never changes (a
list, a dict, a set, a count), so reading one is a pointer load instead of
a dictionary probe, and the list, dict and set operations on them are
direct C-API calls. Everything the hot paths do not need (the handshake,
errors, references, caches, messages in pieces) stays in Python, in
:class:`syncpb.broker.Broker`, reached through ``self``.

Keep the two in step: a change to one is a change to both.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject, PyTypeObject
from libc.string cimport memcpy

from ._creader cimport (reader_imported, reader_jelly, reader_pos, reader_raw,
                        reader_raw_fields, reader_restart, reader_seek)
from ._cwriter cimport (writer_clear_large, writer_int_token, writer_write_items,
                        writer_wrote_large)
from .cache import RemoteCache
from .errors import Error, InsecureJelly, NoSuchMethod, ProtocolError
from .events import AnswerReceived, CallReceived
from .flavors import Referenceable
from .jellybase import Incomplete, JellyError

# The broker's states, as in brokercore.py.
cdef int _READY = 2
cdef int _DEAD = 3


# The two events of every call, made without running their dataclass
# __init__ (a Python frame each): the same objects, fields set directly.
# They are made as ``object.__new__(cls)`` makes them, by the class's own
# tp_new (object's), called in C instead of through a Python call.
cdef PyObject* _no_args = <PyObject*>()


cdef inline object _new_event(type cls):
    return (<PyTypeObject*>cls).tp_new(cls, _no_args, NULL)


cdef inline object _answer_received(request_id, value):
    event = _new_event(AnswerReceived)
    event.request_id = request_id
    event.value = value
    return event


cdef inline object _call_received(request_id, method, args, kwargs, answer_required,
                                  perspective):
    event = _new_event(CallReceived)
    event.request_id = request_id
    event.method = method
    event.args = args
    event.kwargs = kwargs
    event.answer_required = answer_required
    event.perspective = perspective
    return event


cdef inline char* _copy(char* at, bytes piece) noexcept:
    cdef Py_ssize_t size = PyBytes_GET_SIZE(piece)
    memcpy(at, PyBytes_AS_STRING(piece), size)
    return at + size


cdef bytes _message_bytes(head, token, target, flag, list body):
    """``b"".join([head, token, target, flag, *body])``, copied into one bytes
    object at once when all are bytes (the usual case; else by join)."""
    cdef Py_ssize_t total
    cdef char* at
    if not (type(head) is bytes and type(token) is bytes and type(target) is bytes
            and type(flag) is bytes):
        return b"".join([head, token, target, flag] + body)
    total = (PyBytes_GET_SIZE(head) + PyBytes_GET_SIZE(token) + PyBytes_GET_SIZE(target)
             + PyBytes_GET_SIZE(flag))
    for piece in body:
        if type(piece) is not bytes:
            return b"".join([head, token, target, flag] + body)
        total += PyBytes_GET_SIZE(piece)
    result = PyBytes_FromStringAndSize(NULL, total)
    at = PyBytes_AS_STRING(result)
    at = _copy(at, head)
    at = _copy(at, token)
    at = _copy(at, target)
    at = _copy(at, flag)
    for piece in body:
        at = _copy(at, piece)
    return result


cdef class BrokerCore:
    """The state and hot paths of :class:`~syncpb.broker.Broker` (its base)."""

    # (its C fields and C methods are declared in _cbrokercore.pxd)

    @property
    def has_output(self):
        """True when :meth:`pieces_to_send` would return something."""
        return bool(self._out or self.released)

    def pieces_to_send(self):
        return self.pieces_c()

    cdef list pieces_c(self):
        if self.released:
            self._send_decrefs()
        out = self._out
        self._out = []
        return out

    def receive_data(self, data):
        return self.receive_c(data)

    cdef list receive_c(self, data):
        cdef list events = []
        cdef Py_ssize_t pos
        if self._state == _DEAD or not data:
            return events
        try:
            if type(data) is not bytes:
                data = bytes(data)
            if self._frame_first or self._chunks or self._assembly is not None:
                self._receive(data, events)
                return events
            try:
                pos = self._handle_c(data, 0, events)
            except Incomplete:
                self._incomplete(data, 0)
                return events
            except (ProtocolError, InsecureJelly):
                if self._wait_for_end(data, 0):
                    return events
                raise
            if pos < len(<bytes>data) and self._state != _DEAD:
                self._receive(data, events, pos)
        except (ProtocolError, InsecureJelly) as exc:
            self._die(exc, events)
        except RecursionError:
            self._die(ProtocolError("value nested too deeply to decode"), events)
        return events

    def _handle(self, bytes buf, Py_ssize_t pos, list events):
        return self._handle_c(buf, pos, events)

    cdef object _handle_c(self, bytes buf, Py_ssize_t pos, list events):
        if self._state != _READY:
            return self._handshake(buf, pos, events)
        reader = self._reader
        reader_restart(reader, buf, pos, self.security, self._long_strings)
        if buf.startswith(self._answer_head, pos):
            reader_seek(reader, pos + len(self._answer_head))
            self._answer(reader, 2, events)
            return reader_pos(reader)
        if buf.startswith(self._message_head, pos):
            reader_seek(reader, pos + len(self._message_head))
            self._message_c(reader, 6, events, False)
            return reader_pos(reader)
        count = reader.list_header()
        if count < 1:
            raise ProtocolError("empty top-level message")
        command = reader.raw()
        handler = self._commands.get(command) if type(command) is bytes else None
        if handler is None:
            raise ProtocolError(f"unknown PB command {command!r}")
        handler(self, reader, count - 1, events)
        return reader.pos

    def _on_answer(self, reader, Py_ssize_t count, list events):
        """An ``answer`` message's fields: settle the waiting request (the
        hot path of every blocking call)."""
        self._answer(reader, count, events)

    cdef int _answer(self, reader, Py_ssize_t count, list events) except -1:
        # _on_answer's body, called directly by _handle (no method lookup)
        cdef set waiting
        if count != 2:
            self._fields(reader, count, 2, "answer")
        request_id = reader_raw(reader)
        waiting = self._waiting
        if type(request_id) is not int or request_id not in waiting:
            self._check_waiting(request_id)
        try:
            value = reader_jelly(reader)
        except (InsecureJelly, JellyError) as exc:
            self._undecodable(request_id, exc, events)
        if reader_imported(reader):
            self._commit(reader)
        waiting.discard(request_id)
        events.append(_answer_received(request_id, value))
        return 0

    def call(self, oid, str name, args=(), kwargs=None, answer_required=True,
             perspective=None, cache=False):
        return self.call_c(oid, name, args, kwargs, answer_required, perspective, cache)

    cdef object call_c(self, oid, str name, args, kwargs, bint answer_required, perspective,
                       bint cache):
        cdef list body
        cdef bytes target
        if self._state != _READY:
            raise ProtocolError("connection is not ready for calls")
        if self.released:
            self._send_decrefs()
        self._perspective = perspective
        writer = self._writer
        body = []
        if self._pending_exports:
            self._pending_exports = []
        writer_clear_large(writer)
        try:
            writer_write_items(writer, b"tuple", args, body)
            if kwargs:
                writer.write(dict(kwargs), body)
            else:
                body.append(self._empty_kwargs)
        except BaseException:
            self._rollback_exports()
            raise
        if self._pending_exports:
            self._commit_exports()
        self._next_request += 1
        request_id = self._next_request
        key = (oid, name)
        target = self._call_targets.get(key)
        if target is None:
            target = ((writer_int_token(writer, oid) if type(oid) is int else writer.word(oid))
                      + writer.word(name.encode("utf-8")))
            if len(self._call_targets) >= 1024:
                self._call_targets.clear()
            self._call_targets[key] = target
        head = self._cachemessage_head if cache else self._message_head
        token = writer_int_token(writer, request_id)
        flag = b"\x01\x81" if answer_required else b"\x00\x81"
        if len(body) <= 8 and not writer_wrote_large(writer):  # small: one piece, joined once
            self._out.append(_message_bytes(head, token, target, flag, body))
        else:
            self._out.append(b"".join([head, token, target, flag]))
            self._out.extend(body)
        if answer_required:
            self._waiting.add(request_id)
        return request_id

    def answer(self, request_id, value, perspective=None):
        self.answer_c(request_id, value, perspective)

    cdef int answer_c(self, request_id, value, perspective) except -1:
        if self._incoming:
            self._incoming -= 1
        if self._state != _READY:
            return 0
        if self.released:
            self._send_decrefs()
        kind = type(value)
        if kind is int and 0 <= value < 2097152:
            writer = self._writer
            self._out.append(self._answer_head + writer_int_token(writer, request_id)
                             + writer_int_token(writer, value))
            return 0
        if value is None or kind is bool or kind is float:
            writer = self._writer
            out = []
            writer.value(value, out)
            self._out.append(self._answer_head + writer_int_token(writer, request_id) + out[0])
            return 0
        self._answer_slow(request_id, value, perspective)
        return 0

    def _on_message(self, reader, Py_ssize_t count, list events, cache=False):
        self._message_c(reader, count, events, cache)

    cdef int _message_c(self, reader, Py_ssize_t count, list events, bint cache) except -1:
        # _on_message's body, called directly by _handle (no method lookup)
        cdef bint callable_name, answer_required
        if count != 6:
            self._fields(reader, count, 6, "cachemessage" if cache else "message")
        request_id, oid, name, required = reader_raw_fields(reader, 4)
        if type(request_id) is not int:
            raise ProtocolError(f"request id {request_id!r} is not an integer")
        method_name = self._names.get(name) if type(name) is bytes else None
        callable_name = method_name is not None
        if method_name is None:
            method_name, callable_name = self._method_name(name)
        answer_required = bool(required)
        if cache:
            target = self.cache_target(oid)
        else:
            entry = self._exports.get(oid) if type(oid) is int or type(oid) is bytes else None
            target = None if entry is None else entry[0]
        if target is None:
            reader.skip()
            reader.skip()
            what = "Cache" if cache else "Object"
            self._reply_error(request_id, answer_required, Error(f"Invalid {what} ID"))
            self._violation(f"message to unknown {what.lower()} id {oid!r}", events)
            return 0
        try:
            args = reader_jelly(reader)
            kwargs = reader_jelly(reader)
        except InsecureJelly as exc:
            self._rest_of(reader)
            self._commit(reader)
            self._reply_error(request_id, answer_required, exc)
            self._violation(f"refused type in arguments: {exc}", events)
            return 0
        if reader_imported(reader):
            self._commit(reader)
        if type(args) is not tuple and type(args) is not list or type(kwargs) is not dict:
            self._reply_error(request_id, answer_required,
                              TypeError("arguments must be a tuple and a dictionary"))
            return 0
        if kwargs:
            try:
                kwargs = {(k.decode("utf-8") if type(k) is bytes else k): v
                          for k, v in kwargs.items()}
            except UnicodeDecodeError:
                kwargs = None
            if kwargs is None or not all(type(k) is str for k in kwargs):
                self._reply_error(request_id, answer_required,
                                  TypeError("keyword argument names must be text"))
                return 0
        if not callable_name:
            self._reply_error(request_id, answer_required, NoSuchMethod(
                f"refused method name {method_name!r}: only identifiers without '__' "
                f"are callable"))
            return 0
        if isinstance(target, Referenceable):
            method, perspective = target.remote_method(method_name), target.pb_perspective
        elif isinstance(target, RemoteCache):
            method, perspective = target.observe_method(method_name), None
        else:
            method = perspective = None
        if method is None:
            prefix = (target.observe_prefix if isinstance(target, RemoteCache)
                      else getattr(target, "remote_prefix", "remote_"))
            self._reply_error(request_id, answer_required,
                              NoSuchMethod(f"No such method: {prefix}{method_name}"))
            return 0
        limit = self._max_incoming
        if limit is not None and self._incoming >= limit:
            self._refuse_call(request_id, answer_required, limit)
            return 0
        if answer_required:
            self._incoming += 1
        events.append(_call_received(request_id, method,
                                     args if type(args) is tuple else tuple(args), kwargs,
                                     answer_required, perspective))
        return 0
