"""A DB-API 2 connection pool with Twisted adbapi's interface, for any caller.

Theory of operation
-------------------
:class:`ConnectionPool` owns a :class:`~syncpb.adapters.threadpool.ThreadPool`
of ``cp_max`` OS threads, and each thread owns one connection: opened lazily
by the thread's first operation, kept until found dead or the pool closes,
never shared (a module of ``threadsafety`` 0 gets a single thread). The
connections sit in ``connections``, keyed by thread id under a lock, so that
:meth:`ConnectionPool.close` can close them all.

Each operation is one transaction: the pool calls the caller's function with
a :class:`Transaction` (a cursor) or a :class:`Connection`, then commits; if
anything raises, it rolls back and re-raises the same exception. With
``cp_reconnect`` (the default) the connection is then checked; if the
rollback or ``cp_good_sql`` fails it is dead: it is closed and forgotten, and
the caller gets :class:`~syncpb.errors.DatabaseConnectionLost` chained from
the database's error. The operation is never re-run (it may have been a
write that reached the database). The thread opens a new connection for its
next operation; if that fails the caller gets
:class:`~syncpb.errors.DatabaseUnavailable` at once, and the next operation
tries again.

``runQuery``/``runInteraction``/... (adbapi's names) return a
:class:`~syncpb.Deferred` fired in the caller's hub (in the worker thread for
a plain-thread caller); ``run_query``/``run_interaction``/... block only the
caller (its greenlet inside a gevent hub, its thread otherwise).
:meth:`ConnectionPool.close` refuses new work, lets queued and running work
finish (up to a timeout) and closes the idle connections; a worker still busy
after the timeout closes its own connection when it finishes.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any, Callable, Dict, Optional, Set, Tuple, TypeVar

from syncpb.deferred import Deferred, fail
from syncpb.errors import DatabaseConnectionLost, DatabaseUnavailable, PoolClosed, PoolSaturated
from syncpb.waiting import real

from .threadpool import ThreadPool

__all__ = ["ConnectionPool", "Transaction"]

log = logging.getLogger("syncpb")
_get_ident = real("_thread", "get_ident")
_allocate_lock = real("_thread", "allocate_lock")

T = TypeVar("T")
_Args = Tuple[Any, ...]
_Kwargs = Dict[str, Any]


class Connection:
    """What ``runWithConnection``'s function gets: the thread's DB-API
    connection, with ``close()`` ignored (the pool owns the connection)."""

    _connection: Any = None

    def __init__(self, pool: "ConnectionPool", connection: Any) -> None:
        self._pool = pool
        self._connection = connection

    def close(self) -> None:
        """Do nothing: closing a pooled connection would strand its thread."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class Transaction:
    """What ``runInteraction``'s function gets: a cursor of the thread's
    connection, which the pool commits or rolls back around the function.

    Every cursor attribute is the cursor's own: ``execute``,
    ``executemany``, ``fetchone``, ``fetchall``, ``fetchmany``,
    ``description``, ``rowcount``, ``lastrowid`` (where the module has it)...
    """

    _cursor: Any = None

    def __init__(self, pool: "ConnectionPool", connection: Connection) -> None:
        self._pool = pool
        self._connection = connection
        self.reopen()

    def reopen(self) -> None:
        """Close the current cursor, if any, and open a new one."""
        self.close()
        self._cursor = self._connection.cursor()

    def close(self) -> None:
        """Close the cursor (the transaction itself is the pool's to end)."""
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            cursor.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class ConnectionPool:
    """A pool of DB-API 2 connections, one per worker thread.

    Args:
        dbapiName: the DB-API module's import name (``"sqlite3"``, ``"psycopg"``).
        *connargs: passed to the module's ``connect``.
        cp_min: kept for adbapi compatibility (threads start on demand).
        cp_max: most worker threads, hence most connections.
        cp_reconnect: check a connection after a failed operation and
            replace it when dead (raising DatabaseConnectionLost).
        cp_noisy: log connection opens and closes at INFO.
        cp_openfun: called with each new DB-API connection.
        cp_good_sql: a statement that must succeed on a live connection.
        cp_name: prefix of the worker threads' names.
        cp_max_queue: most operations waiting for a thread (PoolSaturated past it).
        cp_queue_timeout: seconds to wait for room in a full queue.
        cp_reactor: accepted and ignored, so adbapi code ports unchanged.
        **connkw: passed to the module's ``connect``.
    """

    def __init__(self, dbapiName: str, *connargs: Any, cp_min: int = 3,  # noqa: N803
                 cp_max: int = 5, cp_reconnect: bool = True, cp_noisy: bool = False,
                 cp_openfun: Optional[Callable[[Any], Any]] = None,
                 cp_good_sql: str = "select 1", cp_name: Optional[str] = None,
                 cp_max_queue: int = 256, cp_queue_timeout: float = 0.0,
                 cp_reactor: Any = None, **connkw: Any) -> None:
        self.dbapiName = dbapiName
        self.dbapi = importlib.import_module(dbapiName)
        self.connargs = connargs
        self.connkw = connkw
        self.min, self.max = min(cp_min, cp_max), max(cp_min, cp_max)
        self.reconnect = cp_reconnect
        self.noisy = cp_noisy
        self.openfun = cp_openfun
        self.good_sql = cp_good_sql
        self.name = cp_name or f"syncpb-db-{dbapiName}"
        self.connections: Dict[int, Any] = {}
        self.running = True
        self._lock = _allocate_lock()
        self._busy: Set[int] = set()
        self._closed = False
        self._final = False
        if self._is_sqlite3():
            connkw.setdefault("check_same_thread", False)
        self.threadpool = ThreadPool(self._threads_allowed(), max_queue=cp_max_queue,
                                     queue_timeout=cp_queue_timeout, name=self.name)

    def _is_sqlite3(self) -> bool:
        sqlite3 = sys.modules.get("sqlite3")
        return sqlite3 is not None and getattr(self.dbapi, "connect", None) is sqlite3.connect

    def _threads_allowed(self) -> int:
        if getattr(self.dbapi, "threadsafety", 0) < 1:
            log.info("%s declares threadsafety 0 (threads may not share the module): "
                     "the pool uses a single thread", self.dbapiName)
            return 1
        return self.max

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.connections)} connections"
        return f"<ConnectionPool {self.dbapiName} max={self.max} {state}>"

    # ------------------------------------------------------------ adbapi's API

    def start(self) -> None:
        """Kept for adbapi compatibility: the pool runs from construction."""

    def runInteraction(self, interaction: Callable[..., Any],  # noqa: N802
                       *args: Any, **kw: Any) -> Deferred:
        """Run ``interaction(transaction, *args, **kw)`` in a transaction.

        Returns:
            A Deferred of its result; it errbacks with the exception raised
            (after a rollback), DatabaseConnectionLost, DatabaseUnavailable,
            PoolClosed or PoolSaturated.
        """
        return self._submit(self._interact, interaction, args, kw)

    def runWithConnection(self, func: Callable[..., Any],  # noqa: N802
                          *args: Any, **kw: Any) -> Deferred:
        """Run ``func(connection, *args, **kw)`` in a transaction; a Deferred
        of its result (errors as for :meth:`runInteraction`)."""
        return self._submit(self._with_connection, func, args, kw)

    def runQuery(self, *args: Any, **kw: Any) -> Deferred:  # noqa: N802
        """``execute(*args, **kw)`` then ``fetchall()``; a Deferred of the rows."""
        return self.runInteraction(_query, *args, **kw)

    def runOperation(self, *args: Any, **kw: Any) -> Deferred:  # noqa: N802
        """``execute(*args, **kw)``; a Deferred of None."""
        return self.runInteraction(_operation, *args, **kw)

    # ------------------------------------------------------------ blocking API

    def run_interaction(self, interaction: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Blocking :meth:`runInteraction` (blocks only the caller).

        Returns:
            The interaction's result.

        Raises:
            The interaction's own exception (after a rollback);
            DatabaseConnectionLost; DatabaseUnavailable; PoolClosed;
            PoolSaturated; RuntimeError when called from inside an
            operation of this same pool.
        """
        return self._run(self._interact, interaction, args, kw)

    def run_with_connection(self, func: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Blocking :meth:`runWithConnection`: return the result or raise."""
        return self._run(self._with_connection, func, args, kw)

    def run_query(self, *args: Any, **kw: Any) -> Any:
        """Blocking :meth:`runQuery`: return the rows or raise."""
        return self.run_interaction(_query, *args, **kw)

    def run_operation(self, *args: Any, **kw: Any) -> None:
        """Blocking :meth:`runOperation`: return None or raise."""
        self.run_interaction(_operation, *args, **kw)

    def _submit(self, body: Callable[..., Any], func: Callable[..., Any],
                args: _Args, kw: _Kwargs) -> Deferred:
        try:
            self._check_open()
            return self.threadpool.submit(self._perform, body, func, args, kw)
        except (PoolClosed, PoolSaturated) as exc:
            return fail(exc)

    def _run(self, body: Callable[..., Any], func: Callable[..., T],
             args: _Args, kw: _Kwargs) -> T:
        self._check_open()
        result: T = self.threadpool.run(self._perform, body, func, args, kw)
        return result

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosed(f"connection pool {self.name} is closed")

    # ------------------------------------------------------------ in a worker thread

    def _perform(self, body: Callable[..., Any], func: Callable[..., Any],
                 args: _Args, kw: _Kwargs) -> Any:
        """Run one operation as one transaction on this thread's connection."""
        thread = self._enter()
        try:
            conn = self.connect()
            try:
                result = body(conn, func, args, kw)
                conn.commit()
                return result
            except BaseException as exc:
                self._recover(conn, exc)
                raise
        finally:
            self._leave(thread)

    def _interact(self, conn: Any, interaction: Callable[..., Any],
                  args: _Args, kw: _Kwargs) -> Any:
        trans = Transaction(self, Connection(self, conn))
        result = interaction(trans, *args, **kw)
        trans.close()
        return result

    def _with_connection(self, conn: Any, func: Callable[..., Any],
                         args: _Args, kw: _Kwargs) -> Any:
        return func(Connection(self, conn), *args, **kw)

    def _enter(self) -> int:
        thread = int(_get_ident())
        with self._lock:
            if thread in self._busy:
                raise RuntimeError(
                    f"an operation of pool {self.name} was started from inside another "
                    "of its operations: use the transaction or connection you were given")
            self._busy.add(thread)
        return thread

    def _leave(self, thread: int) -> None:
        with self._lock:
            self._busy.discard(thread)
            conn = self.connections.pop(thread, None) if self._final else None
        if conn is not None:
            self._close(conn)

    def _recover(self, conn: Any, exc: BaseException) -> None:
        """Roll back after ``exc``; raise DatabaseConnectionLost (from
        ``exc``) and forget the connection when it turns out dead."""
        if not self.reconnect:
            try:
                conn.rollback()
            except Exception:
                log.warning("rollback failed on a %s connection", self.dbapiName,
                            exc_info=True)
            return
        if self._is_alive(conn):
            return
        self._forget(conn)
        raise DatabaseConnectionLost(
            f"the {self.dbapiName} connection was lost during an operation; "
            f"the operation was not re-run ({type(exc).__name__}: {exc})") from exc

    def _is_alive(self, conn: Any) -> bool:
        try:
            conn.rollback()
            cursor = conn.cursor()
            cursor.execute(self.good_sql)  # a dead connection's cursor is not worth closing
            cursor.close()
            conn.rollback()
        except Exception as exc:
            log.warning("%s connection found dead: %s", self.dbapiName, exc)
            return False
        return True

    # ------------------------------------------------------------ connections

    def connect(self) -> Any:
        """This thread's DB-API connection, opened now if it has none (meant
        for pool threads: elsewhere it opens one outside the pool's limit).

        Raises:
            DatabaseUnavailable: the database refused or did not answer.
        """
        thread = _get_ident()
        with self._lock:
            conn = self.connections.get(thread)
        if conn is None:
            conn = self._open()
            with self._lock:
                self.connections[thread] = conn
        return conn

    def disconnect(self, conn: Any) -> None:
        """Close this thread's connection ``conn`` and forget it.

        Raises:
            ValueError: ``conn`` is not the calling thread's connection.
        """
        if self.connections.get(_get_ident()) is not conn:
            raise ValueError("not the calling thread's connection")
        self._forget(conn)

    def _forget(self, conn: Any) -> None:
        thread = _get_ident()
        with self._lock:
            if self.connections.get(thread) is conn:
                del self.connections[thread]
        self._close(conn)

    def _open(self) -> Any:
        if self.noisy:
            log.info("opening a %s connection (pool %s)", self.dbapiName, self.name)
        try:
            conn = self.dbapi.connect(*self.connargs, **self.connkw)
        except (getattr(self.dbapi, "Error", OSError), OSError) as exc:
            raise DatabaseUnavailable(
                f"cannot connect to the database ({self.dbapiName}): {exc}") from exc
        if self.openfun is not None:
            try:
                self.openfun(conn)
            except BaseException:
                self._close(conn)
                raise
        return conn

    def _close(self, conn: Any) -> None:
        if self.noisy:
            log.info("closing a %s connection (pool %s)", self.dbapiName, self.name)
        try:
            conn.close()
        except Exception:
            log.warning("could not close a %s connection", self.dbapiName, exc_info=True)

    def close(self, timeout: Optional[float] = 30.0) -> None:
        """Refuse new work, let queued and running work finish (up to
        ``timeout`` seconds), then close every connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.running = False
        self.threadpool.stop(timeout)
        with self._lock:
            self._final = True
            idle = [thread for thread in self.connections if thread not in self._busy]
            conns = [self.connections.pop(thread) for thread in idle]
        for conn in conns:
            self._close(conn)

    finalClose = close  # noqa: N815 (adbapi's name)


def _query(trans: Transaction, *args: Any, **kw: Any) -> Any:
    trans.execute(*args, **kw)
    return trans.fetchall()


def _operation(trans: Transaction, *args: Any, **kw: Any) -> None:
    trans.execute(*args, **kw)
