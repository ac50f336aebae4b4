"""Tests of the throwaway PostgreSQL server itself (tests/pgserver.py).

Select them with ``pytest -k postgres`` (or ``-m postgres``). Without
PostgreSQL or psycopg they are skipped -- or fail when ``CI=true``.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import pytest

from pgserver import PostgresServer, find_pg_bin

if TYPE_CHECKING:
    import psycopg

pytestmark = pytest.mark.postgres

FAST = 5  # seconds: connect_timeout for the connections made here


def _connect(conninfo: str) -> "psycopg.Connection[Any]":
    import psycopg

    return psycopg.connect(conninfo, connect_timeout=FAST, autocommit=True)


def test_postgres_select_1(postgres_server: PostgresServer) -> None:
    with _connect(postgres_server.conninfo) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # the same server through the keyword form
    import psycopg

    with psycopg.connect(connect_timeout=FAST, **postgres_server.connect_kwargs) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    assert postgres_server.dsn == postgres_server.conninfo


def test_postgres_server_is_private(postgres_server: PostgresServer) -> None:
    assert find_pg_bin() == postgres_server.bin_dir
    assert postgres_server.base_dir.startswith("/tmp/")
    with _connect(postgres_server.conninfo) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (["listen_addresses", "port", "fsync", "max_connections", "data_directory"],),
            ).fetchall()
        )
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["port"] == str(postgres_server.port)
    assert settings["fsync"] == "off"
    assert int(settings["max_connections"]) >= 100
    assert settings["data_directory"] == postgres_server.data_dir


def test_postgres_db_is_fresh_per_test(postgres_db: str) -> None:
    with _connect(postgres_db) as conn:
        conn.execute("CREATE TABLE t (x int)")  # would fail if it already existed
        conn.execute("INSERT INTO t VALUES (1)")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_postgres_db_is_fresh_per_test_again(postgres_db: str) -> None:
    with _connect(postgres_db) as conn:
        conn.execute("CREATE TABLE t (x int)")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_postgres_stop_and_start_again(
    postgres_server: PostgresServer, postgres_db: str
) -> None:
    import psycopg

    with _connect(postgres_db) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    held = _connect(postgres_db)
    try:
        postgres_server.stop()
        postgres_server.stop()  # repeated: no-op
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            _connect(postgres_db)
    finally:
        held.close()
        postgres_server.start()
    postgres_server.start()  # repeated: no-op
    with _connect(postgres_db) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)


def test_postgres_terminated_backend_fails_its_connection(postgres_db: str) -> None:
    import psycopg

    with _connect(postgres_db) as admin, _connect(postgres_db) as victim:
        pid = victim.info.backend_pid
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (
            True,
        )
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        assert victim.closed
        # the server itself is fine
        assert admin.execute("SELECT 1").fetchone() == (1,)


def test_postgres_server_cleanup_removes_everything(
    postgres_server: PostgresServer,  # only for its skip/fail when PostgreSQL is missing
) -> None:
    server = PostgresServer()
    try:
        assert server.port != postgres_server.port
        server.start()
        with _connect(server.conninfo) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.cleanup()
    assert not os.path.exists(server.base_dir)
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=FAST).close()
    server.cleanup()  # repeated: no-op


def test_postgres_failure_names_the_command(postgres_server: PostgresServer) -> None:
    server = PostgresServer()
    try:
        server._initialized = True  # pretend, so pg_ctl finds no data directory
        with pytest.raises(RuntimeError) as info:
            server.start()
        message = str(info.value)
        assert "pg_ctl" in message and server.data_dir in message
        assert "server log" in message
    finally:
        server.cleanup()
    assert not os.path.exists(server.base_dir)
