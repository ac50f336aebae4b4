"""syncpb.adapters: run blocking code without freezing a gevent hub.

* :class:`ThreadPool`, :func:`deferToThread` (a Deferred, Twisted's name)
  and :func:`run_in_thread` (blocks only the caller): the thread-pool bridge.
* :func:`blocking`: mark a remote method to run in the server's pool.
* :class:`ConnectionPool`: a DB-API 2 connection pool with Twisted adbapi's
  interface (``runQuery``/``runOperation``/``runInteraction`` return
  Deferreds) plus blocking forms (``run_query``/``run_operation``/
  ``run_interaction``).

This package is the only part of syncpb that imports DB-API modules.
"""

from syncpb.errors import (DatabaseConnectionLost, DatabaseError, DatabaseUnavailable,
                           PoolClosed, PoolSaturated)

from .threadpool import (ThreadPool, blocking, default_pool, deferToThread, run_in_thread,
                         set_default_pool)
from .dbapi import ConnectionPool, Transaction

__all__ = [
    "ThreadPool", "default_pool", "set_default_pool", "deferToThread", "run_in_thread",
    "blocking",
    "ConnectionPool", "Transaction",
    "PoolSaturated", "PoolClosed",
    "DatabaseError", "DatabaseConnectionLost", "DatabaseUnavailable",
]
