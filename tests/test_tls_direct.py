"""The TLS engine's direct OpenSSL calls against pyOpenSSL's public methods.

Theory: :mod:`syncpb.tls.direct` must be invisible except for speed. Each
test builds the same exchange three ways -- the C record path
(``syncpb.tls._records``), the direct calls through cffi
(``SYNCPB_PURE=1``) and pyOpenSSL's public methods only
(``SYNCPB_TLS_DIRECT=0``) -- over real in-memory handshakes, and requires
the same plaintext, the same close and the same errors. ``make test`` also
runs every TLS test file with ``SYNCPB_PURE=1`` and with
``SYNCPB_TLS_DIRECT=0``, so all three paths pass the whole TLS suite.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from typing import List, Optional, Tuple

import pytest

from syncpb.errors import TLSError
from syncpb.tls import direct
from syncpb.tls.context import client_context, server_context
from syncpb.tls.engine import TLSEngine

from tlscerts import TLSMaterial, shake_hands

pytestmark = pytest.mark.timeout(30)

PATHS = ["compiled", "direct", "public"]
FAST = ["compiled", "direct"]


def use(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make new engines take ``path``."""
    monkeypatch.setenv("SYNCPB_TLS_DIRECT", "0" if path == "public" else "1")
    monkeypatch.setenv("SYNCPB_PURE", "0" if path == "compiled" else "1")
    if path == "compiled" and not direct.compiled():
        if os.environ.get("CI") == "true":
            pytest.fail("the compiled TLS record path was not built")
        pytest.skip("the compiled TLS record path is not built here")


def path_of(engine: TLSEngine) -> str:
    if engine._direct is None:
        return "public"
    return "compiled" if isinstance(engine._direct, direct.CompiledCalls) else "direct"


def pair(material: TLSMaterial, path: str, monkeypatch: pytest.MonkeyPatch,
         version: Optional[str] = None) -> Tuple[TLSEngine, TLSEngine]:
    """A client and a server engine with their handshake done, on ``path``."""
    use(path, monkeypatch)
    server_tls = server_context(material.server.cert_path, material.server.key_path)
    if version == "TLSv1.2":
        from OpenSSL import SSL
        server_tls.context.set_max_proto_version(SSL.TLS1_2_VERSION)
    client = TLSEngine(client_context(ca=material.ca.cert_path), False, "localhost")
    server = TLSEngine(server_tls, True)
    assert path_of(client) == path_of(server) == path
    shake_hands(client, server)
    return client, server


def test_switch_and_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCPB_TLS_DIRECT", "0")
    assert not direct.enabled()
    monkeypatch.setenv("SYNCPB_TLS_DIRECT", "1")
    assert direct.enabled()  # this pyOpenSSL has the attributes it relies on
    monkeypatch.setenv("SYNCPB_PURE", "1")
    assert not direct.compiled()


def test_the_compiled_path_is_the_one_in_use() -> None:
    """``make test`` builds the C record path and the first pass uses it (the
    later passes set SYNCPB_PURE=1 or SYNCPB_TLS_DIRECT=0 on purpose)."""
    if os.environ.get("SYNCPB_PURE") == "1" or os.environ.get("SYNCPB_TLS_DIRECT") == "0":
        assert not direct.compiled()
        return
    if os.environ.get("CI") != "true" and not direct.compiled():
        pytest.skip("the compiled TLS record path is not built here")
    assert direct.compiled()


def test_without_the_extension_one_line_says_so(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(direct, "_records", None)
    monkeypatch.setattr(direct, "_records_tried", False)
    monkeypatch.setitem(sys.modules, "syncpb.tls._records", None)  # import fails
    monkeypatch.setenv("SYNCPB_TLS_DIRECT", "1")
    monkeypatch.delenv("SYNCPB_PURE", raising=False)
    with caplog.at_level(logging.INFO, logger="syncpb.tls"):
        assert not direct.compiled()
        assert not direct.compiled()
    said = [r.getMessage() for r in caplog.records if "compiled TLS record path" in r.getMessage()]
    assert len(said) == 1 and "using the Python one" in said[0]


def exchange(material: TLSMaterial, path: str, monkeypatch: pytest.MonkeyPatch,
             version: Optional[str]) -> List[bytes]:
    """Messages of many sizes both ways, ciphertext cut at random places."""
    client, server = pair(material, path, monkeypatch, version)
    cuts = random.Random(7)
    got: List[bytes] = []
    for size in [1, 40, 16383, 16384, 16385, 100_000, 1 << 20]:
        message = bytes(cuts.randrange(256) for _ in range(min(size, 64))) * (size // 64 + 1)
        message = message[:size]
        for sender, receiver in ((client, server), (server, client)):
            if sender is client:  # both ways of encrypting: send() + data_to_send()...
                sender.send(message)
                cipher = sender.data_to_send()
            else:  # ... and encrypt(), which streams use
                cipher = sender.encrypt(message)
            plain = bytearray()
            start = 0
            while start < len(cipher):
                end = min(len(cipher), start + cuts.randrange(1, 40_000))
                plain += receiver.receive(memoryview(cipher)[start:end])
                start = end
            assert plain == message
            got.append(bytes(plain))
    return got


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
@pytest.mark.parametrize("path", FAST)
def test_every_path_delivers_the_same_bytes(tls_material: TLSMaterial, version: str, path: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert (exchange(tls_material, path, monkeypatch, version)
            == exchange(tls_material, "public", monkeypatch, version))


@pytest.mark.parametrize("path", PATHS)
def test_close_notify(tls_material: TLSMaterial, path: str,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    client, server = pair(tls_material, path, monkeypatch)
    server.send(b"last words")
    server.close()
    assert client.receive(server.data_to_send()) == b"last words"
    assert client.closed_by_peer
    assert client.receive_eof() is True


def corrupted(tls_material: TLSMaterial, path: str,
              monkeypatch: pytest.MonkeyPatch) -> Tuple[str, str, bytes]:
    """Flip one byte of a record: the error, the alert the receiver then sends."""
    client, server = pair(tls_material, path, monkeypatch)
    record = bytearray(client.encrypt(b"x" * 100))
    record[-3] ^= 0x01
    with pytest.raises(TLSError) as caught:
        server.receive(bytes(record))
    with pytest.raises(TLSError):  # failed for good, on either path
        server.send(b"more")
    alert = server.data_to_send()
    return type(caught.value).__name__, str(caught.value), alert


@pytest.mark.parametrize("path", FAST)
def test_a_bad_record_fails_the_same_way(tls_material: TLSMaterial, path: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    direct_kind, direct_text, direct_alert = corrupted(tls_material, path, monkeypatch)
    public_kind, public_text, public_alert = corrupted(tls_material, "public", monkeypatch)
    assert (direct_kind, direct_text) == (public_kind, public_text)
    assert "after the handshake" in direct_text and "bad record mac" in direct_text
    assert direct_alert and public_alert  # both tell the peer why (an encrypted alert)
    assert len(direct_alert) == len(public_alert)


@pytest.mark.parametrize("path", PATHS)
def test_sending_after_close_is_refused(tls_material: TLSMaterial, path: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = pair(tls_material, path, monkeypatch)
    client.close()
    with pytest.raises(ValueError):
        client.send(b"too late")
    with pytest.raises(ValueError):
        client.encrypt(b"too late")


@pytest.mark.parametrize("path", PATHS)
def test_encrypt_before_the_handshake_queues(tls_material: TLSMaterial, path: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    use(path, monkeypatch)
    client = TLSEngine(client_context(ca=tls_material.ca.cert_path), False, "localhost")
    server = TLSEngine(server_context(tls_material.server.cert_path,
                                      tls_material.server.key_path), True)
    hello = client.encrypt(b"early")  # only the ClientHello may go yet
    assert hello[:1] == b"\x16"  # a handshake record
    got = b""
    out = hello
    for _ in range(10):
        if out:
            got += server.receive(out)
        back = server.data_to_send()
        if back:
            client.receive(back)
        out = client.data_to_send()
        if not back and not out:
            break
    assert got == b"early"


@pytest.mark.parametrize("path", FAST)
def test_a_large_message_goes_in_whole(tls_material: TLSMaterial, path: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """pyOpenSSL's contexts allow partial writes (one record per SSL_write):
    the direct path takes a message of many records in one step, so the
    engine never falls back to queueing it."""
    client, server = pair(tls_material, path, monkeypatch)
    message = bytes(range(256)) * 1024  # 256 KiB: 16 records
    assert client._direct is not None
    cipher = client.encrypt(message)
    assert not client._queued
    assert client._direct.send(b"y" * 40_000) == 40_000
    assert server.receive(cipher + client.data_to_send()) == message + b"y" * 40_000


@pytest.mark.parametrize("path", FAST)
def test_more_plaintext_than_the_read_expects(tls_material: TLSMaterial, path: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct read sizes its buffer from the bytes it is given; records
    already waiting in the BIO (put there by another step) still all come out."""
    client, server = pair(tls_material, path, monkeypatch)
    message = bytes(range(256)) * 1024
    server._connection.bio_write(client.encrypt(message))  # waiting, unread
    tail = client.encrypt(b"and the rest")
    assert server.receive(tail) == message + b"and the rest"
    assert server.receive(b"") == b""


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_the_compiled_path_takes_any_buffer(tls_material: TLSMaterial, kind: type,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    client, server = pair(tls_material, "compiled", monkeypatch)
    cipher = client.encrypt(kind(b"abc" * 1000))
    assert server.receive(kind(cipher)) == b"abc" * 1000


def test_the_compiled_path_refuses_what_is_not_a_buffer(
        tls_material: TLSMaterial, monkeypatch: pytest.MonkeyPatch) -> None:
    client, server = pair(tls_material, "compiled", monkeypatch)
    records = server._direct.records  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        records.receive("text")
    with pytest.raises(TypeError):
        client._direct.records.seal(12)  # type: ignore[union-attr]
    assert server.receive(client.encrypt(b"still fine")) == b"still fine"


def test_the_compiled_path_holds_its_connection(tls_material: TLSMaterial,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The C object keeps the pyOpenSSL connection (which owns the SSL
    object and BIOs it points at) alive as long as it lives."""
    client, server = pair(tls_material, "compiled", monkeypatch)
    records = server._direct.records  # type: ignore[union-attr]
    cipher = client.encrypt(b"after the engine is gone")
    del server
    import gc
    gc.collect()
    plain, status, _ = records.receive(cipher)
    assert (plain, status) == (b"after the engine is gone", direct.WANT_MORE)


def refused_write(tls_material: TLSMaterial, path: str,
                  monkeypatch: pytest.MonkeyPatch) -> Tuple[str, str]:
    """OpenSSL refuses the first write of a step (here: the connection was
    shut down under the engine, which still thinks it is steady)."""
    client, _ = pair(tls_material, path, monkeypatch)
    client._connection.shutdown()  # behind the engine's back
    with pytest.raises(TLSError) as caught:
        client.encrypt(b"refused")
    return type(caught.value).__name__, str(caught.value)


@pytest.mark.parametrize("path", FAST)
def test_a_refused_write_fails_the_same_way(tls_material: TLSMaterial, path: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert (refused_write(tls_material, path, monkeypatch)
            == refused_write(tls_material, "public", monkeypatch))


def test_the_compiled_path_needs_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    use("compiled", monkeypatch)
    records = direct._records.Records.__new__(direct._records.Records)
    with pytest.raises(ValueError, match="not given a connection"):
        records.receive(b"x")
    with pytest.raises(ValueError, match="not given a connection"):
        records.drain()
    with pytest.raises(ValueError, match="NULL address"):
        direct._records.Records(0, 0, 0, None)
