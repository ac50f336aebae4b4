"""Paging (syncpb.util): golden frames, 50 MiB both ways over sockets, failures.

Twisted peers: tests/interop/test_paging_interop.py.
"""

from __future__ import annotations

import hashlib
import random

import pytest

import syncpb
from syncpb import util
from syncpb.broker import Broker

from hubthread import run_in_gevent_thread
from vectors import frames

WAIT = 60.0
BIG = random.Random(20261121).randbytes(50 * 1024 * 1024)  # 50 MiB
BIG_SHA = hashlib.sha256(BIG).hexdigest()


class Source(syncpb.Referenceable):
    """Pages ``data`` to whichever collector asks."""

    def __init__(self, data):
        self.data = data
        self.finished = []

    def remote_pages(self, collector, chunk=util.STRING_CHUNK):
        util.StringPager(collector, self.data, chunk, self.finished.append, "done")


class Store(syncpb.Root):
    def __init__(self, tmp_path=None):
        self.tmp_path = tmp_path

    def remote_download(self, collector, size, chunk=util.STRING_CHUNK):
        util.StringPager(collector, BIG[:size], chunk)

    def remote_text(self, collector):
        util.StringPager(collector, "häßlich ✓ " * 1000, 100)

    def remote_file(self, collector, name):
        util.FilePager(collector, open(self.tmp_path / name, "rb"))

    def remote_pull(self, source):
        """Fetch all of the client's pages; answer their SHA-256."""
        return util.getAllPages(source, "pages").addCallback(
            lambda pages: hashlib.sha256(b"".join(pages)).hexdigest())

    def remote_refuse(self, collector):
        raise syncpb.Error("no pages for you")


# ---------------------------------------------------------------- golden frames

def test_page_frames_match_twisted():
    recorded = frames("j_paging")
    expected = [f["raw"] for f in recorded
                if f["dir"] == "s2c" and f["value"][:1] == [b"message"]]
    server = Broker(root=Store())
    server.receive_data(b"".join(f["raw"] for f in recorded[1:3]))
    server.data_to_send()
    for page in (b"abcd", b"efgh", b"ij"):
        server.call(1, "gotPage", (page,), answer_required=False)
    server.call(1, "endedPaging", (), answer_required=False)
    assert server.data_to_send() == b"".join(expected)


# ---------------------------------------------------------------- sockets

@pytest.fixture
def store_address(server_factory, tmp_path):
    return server_factory(Store(tmp_path))[1]


def test_download_50_mib(store_address, connect):
    conn = connect(store_address)
    data = util.get_all_pages(conn.root, "download", len(BIG), timeout=WAIT)
    assert len(data) == len(BIG) and hashlib.sha256(data).hexdigest() == BIG_SHA


def test_upload_50_mib(store_address, connect):
    conn = connect(store_address)
    source = Source(BIG)
    assert conn.root.call("pull", source, timeout=WAIT) == BIG_SHA
    assert source.finished == ["done"]  # the pager's callback ran once paging ended


def test_get_all_pages_is_twisted_shaped(store_address, connect):
    conn = connect(store_address)
    pages = util.getAllPages(conn.root, "download", 10, 4).result(timeout=WAIT)
    assert pages == [BIG[0:4], BIG[4:8], BIG[8:10]]
    assert util.getAllPages(conn.root, "download", 0).result(timeout=WAIT) == [b""]


def test_text_pages_join_to_text(store_address, connect):
    conn = connect(store_address)
    assert util.get_all_pages(conn.root, "text", timeout=WAIT) == "häßlich ✓ " * 1000


def test_file_pager(store_address, connect, tmp_path):
    content = BIG[: 3 * util.FILE_CHUNK + 123]
    (tmp_path / "f.bin").write_bytes(content)
    conn = connect(store_address)
    pages = util.getAllPages(conn.root, "file", "f.bin").result(timeout=WAIT)
    assert [len(p) for p in pages] == [util.FILE_CHUNK] * 3 + [123]
    assert b"".join(pages) == content


def test_failing_paging_call_fails_the_result(store_address, connect):
    conn = connect(store_address)
    with pytest.raises(syncpb.Error, match="no pages for you"):
        util.get_all_pages(conn.root, "refuse", timeout=WAIT)
    assert util.get_all_pages(conn.root, "download", 5, timeout=WAIT) == BIG[:5]


def test_connection_loss_fails_the_result(server_factory, connect):
    server, address = server_factory(Store())
    conn = connect(address)
    d = util.getAllPages(conn.root, "pull", Source(b""))  # never pages back to us
    conn.close()
    with pytest.raises(syncpb.ConnectionLost):
        d.result(timeout=WAIT)


def test_gevent_client_downloads_and_uploads(store_address):
    def fetch():
        with syncpb.connect(store_address, timeout=WAIT) as conn:
            data = util.get_all_pages(conn.root, "download", 1024 * 1024, timeout=WAIT)
            return data, conn.root.call("pull", Source(BIG[:1000]), timeout=WAIT)

    data, digest = run_in_gevent_thread(fetch)
    assert data == BIG[: 1024 * 1024]
    assert digest == hashlib.sha256(BIG[:1000]).hexdigest()
