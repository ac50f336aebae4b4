"""syncpb.adapters.ConnectionPool against a real PostgreSQL server (psycopg 3).

The server is tests/pgserver.py's throwaway one (its fixtures come from
tests/conftest.py); each test gets a fresh database. Select these tests
with ``pytest -k postgres``. Nothing sleeps: concurrency is proven with
barriers, failures are real (a terminated backend, a stopped server).
"""

import threading
import time

import gevent
import pytest

from hubthread import run_in_gevent_thread
from syncpb.adapters import (ConnectionPool, DatabaseConnectionLost, DatabaseUnavailable,
                             PoolClosed)

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

WAIT = 10  # seconds for any one result
CONNECT_TIMEOUT = 5  # psycopg's connect_timeout: a down server never hangs a call


@pytest.fixture
def make_pool(postgres_db):
    pools = []

    def make(**kwargs):
        pool = ConnectionPool("psycopg", postgres_db, connect_timeout=CONNECT_TIMEOUT,
                              **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def backend_pid(trans):
    trans.execute("select pg_backend_pid()")
    return trans.fetchone()[0]


def insert_returning(trans, n, barrier=None):
    if barrier is not None:
        barrier.wait(WAIT)
    trans.execute("insert into t (n) values (%s) returning id, n", (n,))
    row_id, value = trans.fetchone()
    return value, row_id, threading.get_ident(), backend_pid(trans)


def test_postgres_run_query_and_run_operation(make_pool):
    pool = make_pool()
    assert pool.runOperation("create table t (id serial primary key, n int)").result(
        timeout=WAIT) is None
    pool.runOperation("insert into t (n) values (%s), (%s)", (1, 2)).result(WAIT)
    assert pool.runQuery("select n from t order by n").result(WAIT) == [(1,), (2,)]
    pool.run_operation("insert into t (n) values (%(n)s)", {"n": 3})
    assert pool.run_query("select sum(n) from t") == [(6,)]
    assert pool.run_with_connection(
        lambda conn: conn.execute("select count(*) from t").fetchone()) == (3,)


def test_postgres_transactions_commit_and_roll_back(make_pool):
    pool = make_pool()
    pool.run_operation("create table t (id serial primary key, n int)")
    error = ValueError("abandon")

    def insert_then_raise(trans):
        trans.execute("insert into t (n) values (1)")
        raise error

    with pytest.raises(ValueError) as info:
        pool.runInteraction(insert_then_raise).result(WAIT)
    assert info.value is error
    with pytest.raises(ValueError):
        pool.run_interaction(insert_then_raise)
    assert pool.run_query("select count(*) from t") == [(0,)]

    def insert_two(trans):
        trans.executemany("insert into t (n) values (%s)", [(10,), (20,)])
        trans.execute("select count(*) from t")
        return trans.fetchone()[0]

    assert pool.run_interaction(insert_two) == 2
    assert pool.run_query("select n from t order by n") == [(10,), (20,)]


def test_postgres_sql_error_has_the_server_message(make_pool):
    pool = make_pool(cp_min=1, cp_max=1)
    pid = pool.run_interaction(backend_pid)
    with pytest.raises(psycopg.errors.UndefinedTable,
                       match='relation "missing_table" does not exist'):
        pool.runQuery("select * from missing_table").result(WAIT)

    def fail_midway(trans):
        trans.execute("select 1")
        trans.execute("select 1 / 0")

    with pytest.raises(psycopg.errors.DivisionByZero, match="division by zero"):
        pool.run_interaction(fail_midway)
    # rolled back, not replaced: the same backend serves the next operation
    assert pool.run_interaction(backend_pid) == pid
    assert pool.run_query("select 2") == [(2,)]


def test_postgres_twenty_greenlets_at_once(make_pool):
    pool = make_pool(cp_max=5)
    pool.run_operation("create table t (id serial primary key, n int)")
    barrier = threading.Barrier(5)  # 5 interactions at once: the hub never blocked

    def scenario():
        hub_thread = threading.get_ident()
        greenlets = [gevent.spawn(pool.run_interaction, insert_returning, n, barrier)
                     for n in range(20)]
        gevent.joinall(greenlets, timeout=40, raise_error=True)
        d = pool.runQuery("select count(*), count(distinct id) from t")
        d.addCallback(lambda rows: (rows, threading.get_ident()))
        return [g.value for g in greenlets], d.result(WAIT), hub_thread

    answers, (counts, fired_in), hub_thread = run_in_gevent_thread(scenario, timeout=50)
    assert [value for value, _, _, _ in answers] == list(range(20))
    assert len({row_id for _, row_id, _, _ in answers}) == 20
    assert len({thread for _, _, thread, _ in answers}) == 5
    assert len({pid for _, _, _, pid in answers}) == 5  # one connection per thread
    assert counts == [(20, 20)] and fired_in == hub_thread


def test_postgres_terminated_backend_is_lost_not_rerun(make_pool, postgres_db):
    pool = make_pool(cp_min=1, cp_max=1)  # one thread: the next operation uses that backend
    pool.run_operation("create table t (id serial primary key, n int)")
    pid = pool.run_interaction(backend_pid)
    with psycopg.connect(postgres_db, autocommit=True,
                         connect_timeout=CONNECT_TIMEOUT) as admin:
        assert admin.execute("select pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    calls = []

    def insert(trans):
        calls.append(pid)
        trans.execute("insert into t (n) values (1)")

    with pytest.raises(DatabaseConnectionLost, match="not re-run") as info:
        pool.run_interaction(insert)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert "terminating connection" in str(info.value.__cause__)
    assert calls == [pid]
    assert pool.run_query("select count(*) from t") == [(0,)]
    assert pool.run_interaction(backend_pid) != pid
    pool.run_interaction(insert)
    assert pool.run_query("select count(*) from t") == [(1,)]


def test_postgres_server_stop_fails_fast_and_start_recovers(make_pool, postgres_server):
    pool = make_pool(cp_min=1, cp_max=1)
    pool.run_operation("create table kept (n int)")
    pool.run_operation("insert into kept values (42)")
    postgres_server.stop()
    try:
        began = time.monotonic()
        with pytest.raises(DatabaseConnectionLost) as lost:  # the open connection died
            pool.run_query("select n from kept")
        assert isinstance(lost.value.__cause__, psycopg.OperationalError)
        with pytest.raises(DatabaseUnavailable, match="cannot connect") as down:
            pool.run_query("select n from kept")  # reopening fails at once
        assert isinstance(down.value.__cause__, psycopg.OperationalError)
        with pytest.raises(DatabaseUnavailable):
            pool.runQuery("select n from kept").result(WAIT)
        assert time.monotonic() - began < CONNECT_TIMEOUT  # refused, not waited for
    finally:
        postgres_server.start()
    assert pool.run_query("select n from kept") == [(42,)]
    assert pool.runQuery("select n from kept").result(WAIT) == [(42,)]


def test_postgres_close_then_pool_closed(make_pool):
    opened = []
    pool = make_pool(cp_max=2, cp_openfun=opened.append)
    assert pool.run_query("select 1") == [(1,)]
    pool.close()
    with pytest.raises(PoolClosed):
        pool.runQuery("select 1").result(WAIT)
    with pytest.raises(PoolClosed):
        pool.run_query("select 1")
    assert len(opened) == 1 and opened[0].closed and pool.connections == {}
