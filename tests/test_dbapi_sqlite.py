"""syncpb.adapters.ConnectionPool against real sqlite3 files (in tmp_path).

Every answer is checked, nothing sleeps: concurrency is proven with
barriers that only open when enough operations run at the same time.
"""

import logging
import sqlite3
import sys
import threading

import gevent
import pytest

from hubthread import run_in_gevent_thread
from syncpb.adapters import (ConnectionPool, DatabaseConnectionLost, DatabaseUnavailable,
                             PoolClosed, PoolSaturated, Transaction)
from syncpb.failure import Failure

WAIT = 5  # seconds for any one result
BARRIER_WAIT = 10


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "test.sqlite")


@pytest.fixture
def make_pool(db_path):
    pools = []

    def make(*args, **kwargs):
        if not args:
            args = ("sqlite3", db_path)
        kwargs.setdefault("timeout", 10)  # sqlite3's wait for a locked database
        pool = ConnectionPool(*args, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def pool(make_pool):
    pool = make_pool()
    pool.run_operation("create table t (n integer)")
    return pool


def insert_and_read_back(trans, n, barrier=None):
    """Insert ``n`` and read it back by rowid (after ``barrier``, if any)."""
    if barrier is not None:
        barrier.wait(BARRIER_WAIT)
    trans.execute("insert into t (n) values (?)", (n,))
    trans.execute("select n from t where rowid = ?", (trans.lastrowid,))
    return trans.fetchone()[0], threading.get_ident()


# ---------------------------------------------------------------- basic use


def test_run_operation_and_run_query_deferreds(make_pool):
    pool = make_pool()
    assert pool.runOperation("create table t (n integer, s text)").result(timeout=WAIT) is None
    assert pool.runOperation("insert into t values (?, ?)", (1, "one")).result(WAIT) is None
    pool.runOperation("insert into t values (:n, :s)", {"n": 2, "s": "two"}).result(WAIT)
    rows = pool.runQuery("select n, s from t order by n").result(timeout=WAIT)
    assert rows == [(1, "one"), (2, "two")]


def test_blocking_forms(pool):
    assert pool.run_operation("insert into t values (?)", (7,)) is None
    assert pool.run_query("select n from t") == [(7,)]
    assert pool.run_interaction(insert_and_read_back, 8)[0] == 8
    assert pool.run_with_connection(
        lambda conn, n: conn.execute("select count(*) from t where n > ?", (n,)).fetchone(),
        6) == (2,)


def test_interaction_commits(pool):
    def two_rows(trans, first, *, second):
        assert isinstance(trans, Transaction)
        trans.executemany("insert into t values (?)", [(first,), (second,)])
        return trans.rowcount

    assert pool.runInteraction(two_rows, 1, second=2).result(WAIT) == 2
    assert pool.run_query("select n from t order by n") == [(1,), (2,)]


def test_interaction_error_rolls_back_and_the_pool_keeps_working(pool):
    error = ValueError("changed my mind")

    def insert_then_raise(trans):
        trans.execute("insert into t values (1)")
        raise error

    with pytest.raises(ValueError) as info:
        pool.runInteraction(insert_then_raise).result(WAIT)
    assert info.value is error
    with pytest.raises(ValueError):
        pool.run_interaction(insert_then_raise)
    assert pool.run_query("select count(*) from t") == [(0,)]
    pool.run_operation("insert into t values (2)")
    assert pool.run_query("select n from t") == [(2,)]


def test_errback_carries_the_original_exception(pool):
    error = KeyError("missing")

    def raising(trans):
        raise error

    seen = []
    d = pool.runInteraction(raising)
    d.addErrback(lambda failure: seen.append(failure) or failure.trap(KeyError))
    assert d.result(WAIT) is KeyError
    assert isinstance(seen[0], Failure) and seen[0].value is error


def test_sql_error_passes_through_and_keeps_the_connection(make_pool):
    pool = make_pool(cp_min=1, cp_max=1)
    first = pool.run_interaction(lambda trans: id(pool.connect()))
    with pytest.raises(sqlite3.OperationalError, match="no such table: missing"):
        pool.runQuery("select * from missing").result(WAIT)
    with pytest.raises(sqlite3.OperationalError, match='near "selec": syntax error'):
        pool.run_query("selec 1")
    assert pool.run_interaction(lambda trans: id(pool.connect())) == first
    assert pool.run_query("select 1") == [(1,)]


def test_run_with_connection_commits_and_rolls_back(pool):
    def insert(conn, n):
        conn.execute("insert into t values (?)", (n,))
        conn.close()  # ignored: the pool owns the connection
        return n

    def insert_then_fail(conn):
        conn.execute("insert into t values (99)")
        raise RuntimeError("no")

    assert pool.runWithConnection(insert, 3).result(WAIT) == 3
    with pytest.raises(RuntimeError, match="no"):
        pool.run_with_connection(insert_then_fail)
    assert pool.run_query("select n from t") == [(3,)]


def test_transaction_is_a_cursor(pool):
    def explore(trans):
        trans.executemany("insert into t values (?)", [(n,) for n in range(5)])
        trans.execute("select n from t order by n")
        assert [column[0] for column in trans.description] == ["n"]
        first = trans.fetchone()
        some = trans.fetchmany(2)
        trans.reopen()  # a fresh cursor
        assert trans.description is None
        trans.execute("select count(*) from t")
        assert trans.arraysize >= 1  # anything else comes from the cursor too
        return first, some, trans.fetchall()

    assert pool.run_interaction(explore) == ((0,), [(1,), (2,)], [(5,)])


def test_nested_operation_is_refused(pool):
    def nested(trans):
        return pool.run_query("select 1")

    with pytest.raises(RuntimeError, match="inside another"):
        pool.run_interaction(nested)
    assert pool.run_query("select 1") == [(1,)]


# ---------------------------------------------------------------- connections and threads


def test_openfun_runs_once_per_connection(make_pool):
    opened = []
    lock = threading.Lock()

    def openfun(conn):
        with lock:
            opened.append(conn)
        conn.create_function("double", 1, lambda x: 2 * x)

    pool = make_pool(cp_min=3, cp_max=3, cp_openfun=openfun)
    barrier = threading.Barrier(3)

    def together(trans):
        barrier.wait(BARRIER_WAIT)  # only passes with 3 threads at once
        trans.execute("select double(21)")
        return trans.fetchone()[0], threading.get_ident(), pool.connect()

    answers = [d.result(WAIT + BARRIER_WAIT) for d in
               [pool.runInteraction(together) for _ in range(6)]]
    assert [answer[0] for answer in answers] == [42] * 6
    by_thread = {thread: conn for _, thread, conn in answers}
    assert len(by_thread) == 3 and len(opened) == 3
    assert all(by_thread[thread] is conn for _, thread, conn in answers)
    assert {id(conn) for conn in opened} == {id(conn) for conn in by_thread.values()}


def test_sqlite3_needs_no_check_same_thread(make_pool, caplog):
    opened = []
    pool = make_pool(cp_openfun=opened.append)
    pool.run_operation("create table t (n integer)")
    assert pool.run_query("select count(*) from t") == [(0,)]
    with caplog.at_level(logging.WARNING, logger="syncpb"):
        pool.close()  # closes connections opened in the pool's threads
    assert opened and not caplog.records
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
            conn.execute("select 1")


@pytest.fixture
def single_thread_module(tmp_path, monkeypatch):
    """A real DB-API module: sqlite3 re-exported, declaring threadsafety 0."""
    name = "sqlite3_threadsafety_zero"
    (tmp_path / f"{name}.py").write_text(
        "from sqlite3 import *  # noqa: F401,F403\n"
        "from sqlite3 import Error, connect  # noqa: F401\n"
        "threadsafety = 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_threadsafety_zero_uses_one_thread(make_pool, db_path, single_thread_module, caplog):
    with caplog.at_level(logging.INFO, logger="syncpb"):
        pool = make_pool(single_thread_module, db_path, cp_max=5)
    assert "threadsafety 0" in caplog.text
    assert pool.threadpool.size == 1
    deferreds = [pool.runInteraction(lambda trans: threading.get_ident()) for _ in range(10)]
    assert len({d.result(WAIT) for d in deferreds}) == 1
    assert len(pool.connections) == 1


def test_sqlite3_threadsafety_uses_cp_max_threads(make_pool):
    assert sqlite3.threadsafety >= 1
    assert make_pool(cp_max=4).threadpool.size == 4
    pool = make_pool(cp_min=7, cp_max=2)  # adbapi swaps a min above max
    assert (pool.min, pool.max, pool.threadpool.size) == (2, 7, 7)


def test_noisy_logs_opens_and_closes(make_pool, caplog):
    pool = make_pool(cp_noisy=True, cp_name="noisy-pool")
    with caplog.at_level(logging.INFO, logger="syncpb"):
        pool.run_query("select 1")
        pool.close()
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("opening a sqlite3 connection (pool noisy-pool)") for m in messages)
    assert any(m.startswith("closing a sqlite3 connection (pool noisy-pool)") for m in messages)


def test_twenty_greenlets_at_once(pool):
    barrier = threading.Barrier(5)  # 5 interactions at once: the hub never blocked

    def scenario():
        hub_thread = threading.get_ident()
        greenlets = [gevent.spawn(pool.run_interaction, insert_and_read_back, n, barrier)
                     for n in range(20)]
        gevent.joinall(greenlets, timeout=30, raise_error=True)
        d = pool.runQuery("select count(*) from t")
        d.addCallback(lambda rows: (rows, threading.get_ident()))
        return [g.value for g in greenlets], d.result(WAIT), hub_thread

    answers, (count, fired_in), hub_thread = run_in_gevent_thread(scenario, timeout=40)
    assert [n for n, _ in answers] == list(range(20))
    assert len({thread for _, thread in answers}) == 5
    assert count == [(20,)] and fired_in == hub_thread


def test_four_os_threads_at_once(pool):
    barrier = threading.Barrier(4)
    results = {}

    def caller(index):
        results[index] = [pool.run_interaction(insert_and_read_back, index * 100 + i,
                                               barrier if i == 0 else None)[0]
                          for i in range(10)]

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert results == {i: [i * 100 + n for n in range(10)] for i in range(4)}
    assert pool.run_query("select count(*) from t") == [(40,)]


# ---------------------------------------------------------------- failures


def test_dropped_connection_is_replaced_and_not_rerun(make_pool):
    opened = []
    pool = make_pool(cp_min=1, cp_max=1, cp_openfun=opened.append)
    pool.run_operation("create table t (n integer)")
    calls = []

    def insert_drop_insert(trans):
        calls.append(1)
        trans.execute("insert into t values (1)")
        opened[0].close()  # the connection dies under the interaction
        trans.execute("insert into t values (2)")

    with pytest.raises(DatabaseConnectionLost, match="not re-run") as info:
        pool.run_interaction(insert_drop_insert)
    assert isinstance(info.value.__cause__, sqlite3.ProgrammingError)
    assert "closed database" in str(info.value.__cause__)
    assert calls == [1]
    assert pool.run_query("select count(*) from t") == [(0,)]
    assert len(opened) == 2 and list(pool.connections.values()) == [opened[1]]


def test_dropped_connection_deferred_form(make_pool):
    opened = []
    pool = make_pool(cp_min=1, cp_max=1, cp_openfun=opened.append)
    pool.run_query("select 1")
    opened[0].close()
    with pytest.raises(DatabaseConnectionLost):
        pool.runQuery("select 1").result(WAIT)
    assert pool.runQuery("select 2").result(WAIT) == [(2,)]
    assert len(opened) == 2


def test_without_reconnect_the_error_passes_through(make_pool):
    opened = []
    pool = make_pool(cp_min=1, cp_max=1, cp_reconnect=False, cp_openfun=opened.append)
    pool.run_query("select 1")
    opened[0].close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        pool.run_query("select 1")
    assert len(opened) == 1  # nothing checked, nothing replaced (adbapi's behaviour)


def test_unavailable_database_fails_fast_and_recovers(make_pool, tmp_path):
    directory = tmp_path / "not-yet"
    pool = make_pool("sqlite3", str(directory / "db.sqlite"))
    with pytest.raises(DatabaseUnavailable, match="cannot connect to the database") as info:
        pool.run_query("select 1")
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(DatabaseUnavailable):
        pool.runQuery("select 1").result(WAIT)
    directory.mkdir()
    assert pool.run_query("select 1") == [(1,)]


def test_close_then_pool_closed(pool):
    pool.run_operation("insert into t values (1)")
    pool.close()
    pool.close()  # idempotent
    assert not pool.running and pool.connections == {}
    for d in (pool.runQuery("select 1"), pool.runOperation("select 1"),
              pool.runInteraction(insert_and_read_back, 1),
              pool.runWithConnection(lambda conn: None)):
        with pytest.raises(PoolClosed):
            d.result(WAIT)
    with pytest.raises(PoolClosed):
        pool.run_query("select 1")
    with pytest.raises(PoolClosed):
        pool.run_interaction(insert_and_read_back, 1)


def test_close_lets_queued_work_finish(pool):
    deferreds = [pool.runInteraction(insert_and_read_back, n) for n in range(10)]
    pool.close()
    assert sorted(d.result(WAIT)[0] for d in deferreds) == list(range(10))


def test_saturated_pool_errbacks(make_pool):
    pool = make_pool(cp_min=1, cp_max=1, cp_max_queue=0, cp_reactor=object())
    pool.start()  # adbapi's; a no-op here
    started, release = threading.Event(), threading.Event()

    def hold(trans):
        started.set()
        return release.wait(WAIT)

    held = pool.runInteraction(hold)
    assert started.wait(WAIT)
    with pytest.raises(PoolSaturated):
        pool.runQuery("select 1").result(WAIT)
    release.set()
    assert held.result(WAIT) is True
