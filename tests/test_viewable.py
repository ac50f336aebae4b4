"""Viewable and Avatar: per-perspective views, on the broker pair and over sockets.

Here avatars are handed out by a plain root method (tests/test_portal.py
covers views behind a real login); what matters is that a Viewable
reached through an avatar sees that avatar, and that each (avatar,
object) pair keeps one id.
"""

from __future__ import annotations

import pytest

import syncpb
from syncpb.broker import AnswerReceived, CallReceived


from brokerpair import connected_pair, run_calls


class Board(syncpb.Viewable):
    def __init__(self):
        self.posts = []

    def view_post(self, perspective, text):
        self.posts.append((perspective.name if perspective else None, text))
        return len(self.posts)

    def view_whoami(self, perspective):
        return None if perspective is None else perspective.name

    def view_mine(self, perspective):
        name = None if perspective is None else perspective.name
        return [text for who, text in self.posts if who == name]


class User(syncpb.Avatar):
    def __init__(self, name, board):
        self.name, self.board = name, board

    def perspective_board(self):
        return self.board

    def perspective_boardTwice(self):  # noqa: N802 - a PB method name
        return [self.board, self.board]

    def perspective_name(self):
        return self.name

    def remote_hidden(self):  # not callable: avatars expose perspective_ only
        return "leak"


class Lobby(syncpb.Root):
    def __init__(self):
        self.board = Board()
        self.users = {name: User(name, self.board) for name in ("alice", "bob")}

    def remote_user(self, name):
        return self.users[name]

    def remote_board(self):  # reached without an avatar: the view's perspective is None
        return self.board


# ---------------------------------------------------------------- sans-IO broker pair

def _exchange(server, client):
    events = server.receive_data(client.data_to_send())
    run_calls(server, events)
    return events, client.receive_data(server.data_to_send())


def test_calls_through_an_avatar_carry_it_as_the_perspective():
    lobby = Lobby()
    server, client = connected_pair(lobby)
    client.call(b"root", "user", ("alice",))
    _, (answer,) = _exchange(server, client)
    alice_oid = answer.value.oid
    client.call(alice_oid, "board")
    calls, (board,) = _exchange(server, client)
    assert isinstance(calls[0], CallReceived) and calls[0].perspective is lobby.users["alice"]
    client.call(board.value.oid, "whoami")
    calls, (who,) = _exchange(server, client)
    assert calls[0].perspective is lobby.users["alice"] and who.value == "alice"


def test_one_id_per_avatar_and_object_and_views_are_released():
    lobby = Lobby()
    server, client = connected_pair(lobby)
    oids = {}
    for name in ("alice", "bob"):
        client.call(b"root", "user", (name,))
        _, (answer,) = _exchange(server, client)
        client.call(answer.value.oid, "boardTwice")
        _, (views,) = _exchange(server, client)
        assert isinstance(views, AnswerReceived)
        first, second = views.value
        assert first.oid == second.oid  # same avatar, same object: one reference
        oids[name] = first.oid
    assert oids["alice"] != oids["bob"]
    assert len(server._viewpoints) == 2
    for record in list(client._imports.values()):
        client.released.append(record)
    server.receive_data(client.data_to_send())
    assert server.export_count == 0 and server._viewpoints == {}


# ---------------------------------------------------------------- real sockets

def test_each_user_gets_their_own_view(server_factory, connect):
    _, address = server_factory(Lobby())
    conn = connect(address)
    alice, bob = conn.root.user("alice"), conn.root.user("bob")
    alice_board, bob_board = alice.board(), bob.board()
    assert alice_board != bob_board
    assert alice_board == alice.board()  # the same view again
    assert alice_board.whoami() == "alice" and bob_board.whoami() == "bob"
    alice_board.post("hi from alice")
    bob_board.post("hi from bob")
    assert alice_board.mine() == ["hi from alice"]
    assert bob_board.callRemote("mine").result(timeout=10) == ["hi from bob"]


def test_view_reached_without_an_avatar_has_no_perspective(server_factory, connect):
    conn = connect(server_factory(Lobby())[1])
    assert conn.root.board().whoami() is None


def test_avatar_exposes_only_perspective_methods(server_factory, connect):
    conn = connect(server_factory(Lobby())[1])
    alice = conn.root.user("alice")
    assert alice.name() == "alice"
    with pytest.raises(syncpb.NoSuchMethod, match="perspective_hidden"):
        alice.hidden()
