"""Server start/stop edge cases: stop before, during and after serving."""

from __future__ import annotations

import threading

import pytest

import syncpb


class Echo(syncpb.Root):
    def remote_echo(self, value):
        return value


def test_stop_before_serving_means_never_serve():
    server = syncpb.Server(Echo())
    server.listen("tcp://127.0.0.1:0")
    server.stop()
    with pytest.raises(syncpb.SyncPBError, match="stopped"):
        server.serve_forever()
    assert server.addresses == []


def test_stop_waits_for_serve_forever_in_a_user_thread():
    server = syncpb.Server(Echo())
    address = server.listen("tcp://127.0.0.1:0")
    finished = threading.Event()

    def serve():
        server.serve_forever()
        finished.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with syncpb.connect(address, timeout=5) as conn:  # connecting proves it serves
        assert conn.root.echo(1) == 1
        server.stop(timeout=10)
        assert finished.is_set()  # stop() returned only after serve_forever did
    thread.join(5)


def test_stop_from_inside_a_remote_method_does_not_deadlock():
    stopped = threading.Event()

    class Stopper(syncpb.Root):
        def remote_stop(self):
            server.stop()
            stopped.set()
            return "stopping"

    server = syncpb.Server(Stopper())
    address = server.listen("tcp://127.0.0.1:0")
    server.start()
    with syncpb.connect(address, timeout=5) as conn:
        d = conn.root.callRemote("stop")
        try:  # the answer may or may not beat the closing of the connection
            assert d.result(timeout=10) == "stopping"
        except syncpb.ConnectionLost:
            pass
    assert stopped.is_set()
    server.stop(timeout=10)
    assert server.connection_count == 0


def test_stop_is_idempotent_and_server_is_single_use():
    server = syncpb.Server(Echo())
    server.listen("tcp://127.0.0.1:0")
    server.start()
    server.stop(timeout=10)
    server.stop(timeout=10)
    with pytest.raises(syncpb.SyncPBError):
        server.start(timeout=5)


def test_a_peer_leaving_before_the_handshake_is_an_info_line_not_an_error(server_factory,
                                                                          connect, caplog):
    """A port probe or health check: connect, read the greeting, hang up."""
    import gc
    import logging
    import socket
    server, address = server_factory(Echo())
    host, port = address[len("tcp://"):].rsplit(":", 1)
    with caplog.at_level(logging.INFO, logger="syncpb"):
        with socket.create_connection((host, int(port)), timeout=10) as probe:
            probe.settimeout(10)
            assert probe.recv(100)  # the server's PB greeting
        assert connect(address).root.echo("after") == "after"  # served after the probe
        gc.collect()  # an unconsumed failed Deferred would log its error now
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(level == logging.INFO and "ended before the handshake" in text
               for level, text in messages)
    assert not [text for level, text in messages if level >= logging.ERROR]
