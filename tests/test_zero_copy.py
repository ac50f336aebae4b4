"""Large payloads are never copied into new buffers on the way out.

Each fresh large buffer costs page faults as well as a copy (W3 halved
when a call's payload was joined into one piece), so the broker must hand
a large bytes value to the transport as the very same object.
"""

from __future__ import annotations

import os

from syncpb import banana
from syncpb.flavors import Root

from brokerpair import connected_pair


class Echo(Root):
    def remote_echo(self, value):
        return value


def test_a_large_argument_leaves_as_the_same_object():
    server, client = connected_pair(Echo())
    payload = os.urandom(256 * 1024)
    client.call(b"root", "echo", (payload,))
    pieces = client.pieces_to_send()
    assert any(piece is payload for piece in pieces)


def test_a_large_answer_leaves_as_the_same_object():
    server, client = connected_pair(Echo())
    payload = os.urandom(256 * 1024)
    client.call(b"root", "echo", (payload,))
    (call,) = server.receive_data(client.data_to_send())
    server.answer(call.request_id, call.args[0])
    assert any(piece is call.args[0] for piece in server.pieces_to_send())


def test_small_calls_and_answers_are_one_piece():
    server, client = connected_pair(Echo())
    client.call(b"root", "echo", (1,))
    (message,) = client.pieces_to_send()
    (call,) = server.receive_data(message)
    server.answer(call.request_id, 1)
    assert len(server.pieces_to_send()) == 1


def test_a_long_string_split_over_reads_is_assembled_from_the_chunks():
    server, client = connected_pair(Echo())
    payload = os.urandom(200 * 1024)
    client.call(b"root", "echo", (payload,))
    data = client.data_to_send()
    events = []
    for start in range(0, len(data), 64 * 1024):
        events += server.receive_data(data[start:start + 64 * 1024])
    (call,) = events
    assert call.args[0] == payload
    framer = banana.Framer()
    assert framer.feed(data[:1000]) is None and framer.long_strings  # recorded for cutting
