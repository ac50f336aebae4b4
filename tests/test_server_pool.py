"""End to end: a server runs blocking methods in a thread pool, not in its hub.

"A method ran in the pool and the hub kept serving" is shown by events:
``block`` waits on a plain ``threading.Event`` (which would freeze the hub
if it ran there) that only a later call, ``release``, sets. If ``block``
ran in the hub, ``release`` could never be served and the client's call
timeout would fail the test.
"""

from __future__ import annotations

import threading

import pytest

import syncpb
from syncpb import adapters

WAIT = 10.0


class Service(syncpb.Root):
    def __init__(self) -> None:
        self.released = threading.Event()
        self.entered = threading.Event()
        self.hub_thread = None

    def remote_hub_thread(self):
        self.hub_thread = threading.get_ident()
        return self.hub_thread

    def remote_where(self):
        return threading.get_ident(), syncpb.wait_mode()

    @adapters.blocking
    def remote_where_blocking(self):
        return threading.get_ident(), syncpb.wait_mode()

    @adapters.blocking
    def remote_block(self):
        self.entered.set()
        assert self.released.wait(WAIT), "nobody released the blocked call"
        return "released"

    def remote_release(self):
        self.released.set()
        return True


class Board(syncpb.Viewable):
    @adapters.blocking
    def view_where(self, perspective):
        return threading.get_ident(), perspective


class ViewService(Service):
    def __init__(self) -> None:
        super().__init__()
        self.board = Board()

    def remote_board(self):
        return self.board


@pytest.fixture
def own_pool():
    pool = adapters.ThreadPool(4, name="test-server-pool")
    yield pool
    pool.stop(WAIT)


def test_a_blocking_method_runs_in_the_pool_and_the_hub_keeps_serving(server_factory, connect):
    service = Service()
    _, address = server_factory(service)
    conn = connect(address, call_timeout=WAIT)
    other = connect(address, call_timeout=WAIT)
    hub_thread = conn.root.hub_thread()
    pending = conn.root.callRemote("block")
    assert service.entered.wait(WAIT)
    assert other.root.release() is True   # served by the hub while block() still runs
    assert pending.result(timeout=WAIT) == "released"
    where, mode = conn.root.where_blocking()
    assert where != hub_thread and mode == "thread"
    assert conn.root.where() == (hub_thread, "greenlet")  # unmarked methods stay in the hub


def test_blocking_methods_true_runs_every_method_in_the_pool(server_factory, connect, own_pool):
    server, address = server_factory(Service(), pool=own_pool, blocking_methods=True)
    conn = connect(address, call_timeout=WAIT)
    where, mode = conn.root.where()
    assert mode == "thread" and where != server._hub_thread


def test_a_views_blocking_method_runs_in_the_pool(server_factory, connect):
    _, address = server_factory(ViewService())
    conn = connect(address, call_timeout=WAIT)
    hub_thread = conn.root.hub_thread()
    board = conn.root.board()
    where, perspective = board.where()
    assert where != hub_thread and perspective is None


def test_stop_drains_the_servers_own_pool_then_refuses_work(server_factory, connect, own_pool):
    service = Service()
    server, address = server_factory(service, pool=own_pool)
    conn = connect(address, call_timeout=WAIT)
    pending = conn.root.callRemote("block")
    assert service.entered.wait(WAIT)
    stopper = threading.Thread(target=server.stop, args=(WAIT,))
    stopper.start()
    # The server is stopping (no new connections) but the pooled call is still
    # running: let it finish; its answer still reaches the client.
    service.released.set()
    assert pending.result(timeout=WAIT) == "released"
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert own_pool.closed
    with pytest.raises(syncpb.PoolClosed):
        own_pool.run(len, "x")


def test_a_saturated_pool_fails_the_call_with_a_clear_error(server_factory, connect):
    service = Service()
    pool = adapters.ThreadPool(1, max_queue=0, name="tiny")
    _, address = server_factory(service, pool=pool)
    conn = connect(address, call_timeout=WAIT)
    pending = conn.root.callRemote("block")
    assert service.entered.wait(WAIT)
    with pytest.raises(syncpb.RemoteError) as info:
        conn.root.where_blocking()
    assert info.value.remote_type == "syncpb.errors.PoolSaturated"
    assert "saturated" in info.value.message
    assert conn.root.release() is True
    assert pending.result(timeout=WAIT) == "released"
    assert conn.root.where_blocking()[1] == "thread"  # room again


class Store(syncpb.Root):
    def __init__(self, path: str) -> None:
        self.db = adapters.ConnectionPool("sqlite3", path, cp_min=1, cp_max=2)
        self.db.run_operation("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT)")

    def remote_put(self, key, value):
        self.db.run_operation("INSERT INTO kv VALUES (?, ?)", (key, value))
        return True

    def remote_lookup(self, key):
        rows = self.db.run_query("SELECT value FROM kv WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def remote_count(self):
        return self.db.runQuery("SELECT count(*) FROM kv").addCallback(lambda rows: rows[0][0])

    def remote_bad_sql(self):
        return self.db.run_query("SELECT * FROM missing")


def test_database_calls_from_remote_methods(server_factory, connect, tmp_path):
    store = Store(str(tmp_path / "kv.db"))
    try:
        _, address = server_factory(store)
        conn = connect(address, call_timeout=WAIT)
        assert conn.root.put("a", "1") is True
        assert conn.root.lookup("a") == "1"
        assert conn.root.lookup("nope") is None
        assert conn.root.callRemote("count").result(timeout=WAIT) == 1
        # the database's own error reaches the caller, with its message and no traceback
        with pytest.raises(syncpb.RemoteError) as info:
            conn.root.bad_sql()
        assert info.value.remote_type == "sqlite3.OperationalError"
        assert info.value.message == "no such table: missing"
        assert info.value.remote_traceback is None
        # a duplicate key: the transaction rolls back, the connection stays usable
        with pytest.raises(syncpb.RemoteError) as info:
            conn.root.put("a", "2")
        assert "UNIQUE constraint failed" in info.value.message
        assert conn.root.lookup("a") == "1"
    finally:
        store.db.close()
