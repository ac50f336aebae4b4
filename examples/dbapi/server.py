"""A key-value store on SQLite, served over PB.

    python server.py tcp://127.0.0.1:8820 kv.sqlite3

prints its address, then serves until its stdin closes (or Ctrl-C). The
database is a file (created if missing); never ``:memory:`` (see README.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import sys
import threading
from typing import List, Optional

import syncpb
from syncpb import adapters


class Store(syncpb.Root):
    """Keys and values in one table, behind a pool of database connections."""

    def __init__(self, path: str) -> None:
        if path == ":memory:":
            raise ValueError("each pool thread would get its own empty database: use a file")
        self.path = path
        self.db = adapters.ConnectionPool("sqlite3", path)  # any DB-API 2 module, by name
        self.db.run_operation("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT)")

    def remote_put(self, key: str, value: str) -> None:
        # The blocking form: only this call's greenlet waits for the pool.
        self.db.run_operation("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                              (key, value))

    def remote_lookup(self, key: str) -> Optional[str]:
        rows = self.db.run_query("SELECT value FROM kv WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def remote_count(self) -> syncpb.Deferred:
        # Twisted's name: a Deferred, and PB answers when it fires.
        return self.db.runQuery("SELECT count(*) FROM kv").addCallback(lambda rows: rows[0][0])

    def remote_transfer(self, source: str, target: str) -> syncpb.Deferred:
        """Move source's value to the new key target, in one transaction."""
        return self.db.runInteraction(_transfer, source, target)

    @adapters.blocking
    def remote_checksum(self) -> List[object]:
        """Row count and SHA-256 of the whole table. The method runs in the
        server's thread pool, so it may use plain, not gevent-aware, code:
        here the stdlib sqlite3 module on a connection of its own."""
        digest = hashlib.sha256()
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            rows = conn.execute("SELECT key, value FROM kv ORDER BY key").fetchall()
        for key, value in rows:
            digest.update(f"{key}\t{value}\n".encode())
        return [len(rows), digest.hexdigest()]


def _transfer(txn: adapters.Transaction, source: str, target: str) -> None:
    """Runs in a pool thread; the pool commits when it returns and rolls
    back if it raises, so the DELETE never lands without the INSERT."""
    txn.execute("SELECT value FROM kv WHERE key = ?", (source,))
    row = txn.fetchone()
    if row is None:
        raise syncpb.Error(f"no key {source!r}")
    txn.execute("DELETE FROM kv WHERE key = ?", (source,))
    # A plain INSERT: if target exists, SQLite refuses (UNIQUE constraint).
    txn.execute("INSERT INTO kv (key, value) VALUES (?, ?)", (target, row[0]))


def make_server(path: str) -> syncpb.Server:
    """A server for a Store on ``path``. It owns the pool its blocking
    methods run in, and stop() stops that pool; the Store's database pool
    is closed with ``server.root.db.close()``."""
    return syncpb.Server(Store(path), pool=adapters.ThreadPool(4, name="kv-blocking"))


def main(argv: List[str]) -> None:
    address = argv[1] if len(argv) > 1 else "tcp://127.0.0.1:8820"
    server = make_server(argv[2] if len(argv) > 2 else "kv.sqlite3")
    try:
        print(server.listen(address), flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), server.stop()), daemon=True).start()
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        server.root.db.close()


if __name__ == "__main__":
    main(sys.argv)
