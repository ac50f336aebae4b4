"""Hostile peers against the flavors, on real sockets.

A raw client (``rawpeer.RawPeer``) or a raw server (``HostileServer``)
sends a bad copy/cache exchange. The victim answers as Twisted does (an
error reply, or dropping that connection), keeps its other connections
working, and keeps no table entries for the bad exchange.
"""

from __future__ import annotations

import threading

import pytest

import syncpb
from syncpb import banana

from rawpeer import OFFER, VERSION_6, HostileServer, RawPeer, message, read_choice_and_version
from test_cacheable import REGISTRY, RemoteCounter, WaitingOwner

WAIT = 5.0
E = banana.encode


@pytest.fixture
def owner(server_factory):
    owner = WaitingOwner()  # increment() answers once every holder applied it
    _, address = server_factory(owner, registry=REGISTRY)
    return owner, address


def _good_client_with_counter(connect, address):
    conn = connect(address, registry=REGISTRY)
    counter = conn.root.getCounter()
    return conn, counter


def test_decache_twice_closes_only_that_connection(owner, connect):
    owner_obj, address = owner
    good, kept = _good_client_with_counter(connect, address)
    with RawPeer(address).handshake() as peer:
        reply = peer.call_and_read(b"getCounter")
        cid = reply[2][1]  # [b'answer', id, [tag, cache id, state]]
        assert reply[2][0] == b"vectypes.Counter"
        peer.send(E([b"decache", cid]))
        assert peer.read_message() == [b"uncache", cid]
        peer.send(E([b"decache", cid]))  # the second one: unknown now
        peer.read_until_closed()
    assert good.root.increment() == 1 and kept.value == 1  # the others keep working
    assert len(owner_obj.counter.observers) == 1  # only the good client still observes
    assert len(owner_obj.counter.stopped) == 1


def test_unknown_lcache_in_arguments_closes_only_that_connection(owner, connect):
    owner_obj, address = owner
    good, _ = _good_client_with_counter(connect, address)
    with RawPeer(address).handshake() as peer:
        peer.send(message(1, b"root", b"isCounter", [b"tuple", [b"lcache", 77]]))
        peer.read_until_closed()
    assert good.root.isCounter(good.root.getCounter()) is True
    assert len(owner_obj.counter.observers) == 1


def test_unregistered_copy_in_arguments_is_refused(owner, connect):
    _, address = owner
    good, _ = _good_client_with_counter(connect, address)
    with RawPeer(address).handshake() as peer:
        peer.send(message(1, b"root", b"isCounter", [b"tuple", [b"evil.Thing", [b"dictionary"]]]))
        reply = peer.read_message()
        assert reply[:2] == [b"error", 1]
        assert b"InsecureJelly" in E(reply) and b"evil" in E(reply)
        peer.read_until_closed()
    assert good.root.increment() == 1


def _hostile_cache_server(after_cache):
    """A server that answers the first call with a cache, then runs ``after_cache``."""

    def script(stream):
        stream.send(OFFER)
        read_choice_and_version(stream)
        stream.send(VERSION_6)
        call = stream.read_message()
        state = [b"dictionary", [[b"unicode", b"value"], 5]]
        stream.send(E([b"answer", call[1], [b"vectypes.Counter", 3, state]]))
        return after_cache(stream, call)

    return script


def test_cached_reference_to_unknown_id_fails_the_call_and_closes(connect):
    def after(stream, first):
        second = stream.read_message()
        stream.send(E([b"answer", second[1], [b"cached", 99]]))
        return stream.read_until_closed()

    with HostileServer(_hostile_cache_server(after)) as server:
        conn = connect(server.address, registry=REGISTRY)
        counter = conn.root.getCounter()
        assert type(counter) is RemoteCounter and counter.value == 5
        with pytest.raises((syncpb.ConnectionLost, syncpb.ProtocolError)):
            conn.root.getCounter()
        closed = threading.Event()
        conn.notifyOnDisconnect(closed.set)
        assert closed.wait(WAIT)
        server.join()
        assert conn.broker.cache_import_count == 0 and conn.broker.import_count == 0


def test_update_to_unknown_cache_id_is_answered_then_closed(connect):
    def after(stream, first):
        stream.send(message(1, 42, b"setValue", [b"tuple", 6], command=b"cachemessage"))
        return stream.read_until_closed()

    with HostileServer(_hostile_cache_server(after)) as server:
        conn = connect(server.address, registry=REGISTRY)
        counter = conn.root.getCounter()
        received = server.join()
        assert received[0][:2] == [b"error", 1]
        assert b"Invalid Cache ID" in E(received[0])
        assert counter.value == 5  # nothing was applied
        assert conn.broker.cache_import_count == 0  # dropped with the connection


def test_update_to_a_missing_observe_method_keeps_the_connection(connect):
    def after(stream, first):
        stream.send(message(1, 3, b"noSuchUpdate", [b"tuple"], command=b"cachemessage"))
        reply = stream.read_message()
        stream.send(message(2, 3, b"setValue", [b"tuple", 6], command=b"cachemessage"))
        return reply, stream.read_message()

    with HostileServer(_hostile_cache_server(after)) as server:
        conn = connect(server.address, registry=REGISTRY)
        counter = conn.root.getCounter()
        missing, applied = server.join()
        assert missing[:2] == [b"error", 1] and b"observe_noSuchUpdate" in E(missing)
        assert applied == [b"answer", 2, [b"unicode", b"ok"]]
        assert counter.value == 6 and not conn.closed
