"""A real, throwaway PostgreSQL server for tests.

:class:`PostgresServer` runs ``initdb`` into a fresh directory under ``/tmp``
and starts a private ``postgres`` on ``127.0.0.1`` and a free TCP port (and a
unix socket in that same directory). It never touches a system cluster (for
example the one Debian's ``postgresql`` package starts on port 5432) and only
ever stops the server of its own data directory, through ``pg_ctl``.

PostgreSQL refuses to run as root: when the tests run as root (CI), the
directory is handed to the ``postgres`` system user and every server command
runs through ``runuser -u postgres --``. Otherwise the commands run as the
current user.

Fixtures (register them for all tests with one line in ``tests/conftest.py``:
``from pgserver import postgres_server, postgres_db  # noqa: F401``)

``postgres_server`` (session scope)
    The started :class:`PostgresServer`, shared by the whole session and
    removed at its end. A test that calls ``stop()`` must ``start()`` it again
    (``try``/``finally``). If PostgreSQL or psycopg is missing the test is
    skipped, saying what is missing -- or fails when ``CI=true``.

``postgres_db`` (function scope)
    The conninfo string of a database created for this one test (on the
    session server); it is dropped, with any connections left on it, when the
    test ends.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

SERVER_USER = "postgres"
START_TIMEOUT = 30  # seconds, pg_ctl -t
COMMAND_TIMEOUT = 120.0  # seconds, for any one initdb/pg_ctl run
CONNECT_TIMEOUT = 10  # seconds, psycopg connect_timeout for the helpers
LOG_TAIL_LINES = 40

_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _version_key(bin_dir: str) -> Tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin -> numeric sort, so 15 beats 9.6
    version = os.path.basename(os.path.dirname(bin_dir))
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def _has_tools(bin_dir: str) -> bool:
    return all(
        os.access(os.path.join(bin_dir, tool), os.X_OK) for tool in ("initdb", "pg_ctl")
    )


def find_pg_bin() -> Optional[str]:
    """The directory holding ``initdb`` and ``pg_ctl``, or None.

    ``pg_ctl`` on PATH first (symlinks resolved, so that ``initdb`` and
    ``postgres`` are looked for next to the real binary), then the highest
    version under ``/usr/lib/postgresql/*/bin`` (Debian keeps them off PATH).
    """
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        for candidate in (
            os.path.dirname(os.path.realpath(on_path)),
            os.path.dirname(os.path.abspath(on_path)),
        ):
            if _has_tools(candidate):
                return candidate
    for bin_dir in sorted(glob.glob(_BIN_GLOB), key=_version_key, reverse=True):
        if _has_tools(bin_dir):
            return bin_dir
    return None


def _is_root() -> bool:
    return os.geteuid() == 0


def find_runuser() -> Optional[str]:
    """``runuser`` on PATH or in the sbin directories (often off a root PATH)."""
    found = shutil.which("runuser")
    if found is not None:
        return found
    for candidate in ("/usr/sbin/runuser", "/sbin/runuser"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_requirements() -> List[str]:
    """What this machine lacks to run :class:`PostgresServer` (empty: nothing)."""
    missing = []
    if find_pg_bin() is None:
        missing.append(
            "the PostgreSQL server binaries (initdb, pg_ctl: not on PATH nor "
            f"under {_BIN_GLOB})"
        )
    if _is_root():
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            missing.append(
                f"the '{SERVER_USER}' system user (needed to run the server as root)"
            )
        if find_runuser() is None:
            missing.append("runuser (util-linux; needed to run the server as root)")
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        missing.append(f"psycopg 3 ({exc})")
    return missing


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One private PostgreSQL server in its own temporary directory.

    Nothing happens until :meth:`start` (the first call runs ``initdb``).
    ``start``/``stop`` may be called any number of times; a restart reuses
    the data directory and the port. :meth:`cleanup` stops the server and
    removes the directory.
    """

    def __init__(self, bin_dir: Optional[str] = None) -> None:
        found = bin_dir if bin_dir is not None else find_pg_bin()
        if found is None:
            raise RuntimeError(
                f"PostgreSQL not found (initdb/pg_ctl on PATH or under {_BIN_GLOB})"
            )
        self.bin_dir: str = found
        self.as_root: bool = _is_root()
        self.base_dir: str = tempfile.mkdtemp(prefix="syncpb-pg-", dir="/tmp")
        self.data_dir: str = os.path.join(self.base_dir, "data")
        self.log_file: str = os.path.join(self.base_dir, "server.log")
        self.host: str = "127.0.0.1"
        self.port: int = _free_port()
        self.user: str = SERVER_USER
        self.running: bool = False
        self._initialized: bool = False
        if self.as_root:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)

    # -- connection parameters -------------------------------------------

    @property
    def connect_kwargs(self) -> Dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": "postgres",
        }

    @property
    def conninfo(self) -> str:
        return self.conninfo_for("postgres")

    dsn = conninfo

    def conninfo_for(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    # -- running commands --------------------------------------------------

    def _tool(self, name: str) -> str:
        return os.path.join(self.bin_dir, name)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return "(no server log)"

    def _run(self, args: Sequence[str]) -> str:
        command = list(args)
        if self.as_root:
            command = [find_runuser() or "runuser", "-u", SERVER_USER, "--"] + command
        try:
            result = subprocess.run(
                command,
                cwd=self.base_dir,  # readable by the postgres user, unlike /root
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(
                f"command {command!r} could not run: {exc}\n"
                f"--- server log ({self.log_file}) ---\n{self.log_tail()}"
            ) from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"command {command!r} failed with exit status {result.returncode}\n"
                f"--- output ---\n{result.stdout}"
                f"--- server log ({self.log_file}) ---\n{self.log_tail()}"
            )
        return result.stdout

    def _initdb(self) -> None:
        self._run(
            [
                self._tool("initdb"),
                "-D",
                self.data_dir,
                "-A",
                "trust",
                "-U",
                SERVER_USER,
                "--no-sync",
                # C locale: independent of the locales the machine has
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base_dir}'",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
            "max_connections": "100",
        }
        # Appending keeps the file's owner; later lines win in postgresql.conf.
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as conf:
            conf.write("\n# throwaway test server (tests/pgserver.py)\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        self._initialized = True

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the server (runs ``initdb`` first, once); no-op if running."""
        if self.running:
            return
        if not self._initialized:
            self._initdb()
        self._run(
            [
                self._tool("pg_ctl"),
                "-D",
                self.data_dir,
                "-l",
                self.log_file,
                "-w",
                "-t",
                str(START_TIMEOUT),
                "start",
            ]
        )
        self.running = True

    def stop(self) -> None:
        """Stop the server (fast shutdown, waits); no-op if not running."""
        if not self.running:
            return
        self._run([self._tool("pg_ctl"), "-D", self.data_dir, "-m", "fast", "-w", "stop"])
        self.running = False

    def cleanup(self) -> None:
        """Stop the server if it runs and remove its directory."""
        try:
            if self.running:
                try:
                    self.stop()
                except RuntimeError:
                    # still only our own data directory
                    self._run(
                        [
                            self._tool("pg_ctl"),
                            "-D",
                            self.data_dir,
                            "-m",
                            "immediate",
                            "-w",
                            "stop",
                        ]
                    )
                    self.running = False
        finally:
            if not self.running:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its conninfo string."""
        if not _DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.conninfo_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, closing any connection still on it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT
        ) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)
                )
            )


# -- pytest fixtures -------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    missing = missing_requirements()
    if missing:
        reason = "PostgreSQL tests need " + "; ".join(missing) + "."
        if os.environ.get("CI") == "true":
            pytest.fail(
                reason + " `make test` installs PostgreSQL (apt-get install postgresql) "
                "when it runs as root; psycopg comes with pip install -e '.[test]'.",
                pytrace=False,
            )
        pytest.skip(
            reason + " Install the server with `sudo apt-get install postgresql` "
            "(or run `make test` as root, which does it), and psycopg with "
            "`make test` / `pip install -e '.[test]'`."
        )
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


_db_numbers = itertools.count(1)


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"test_{os.getpid()}_{next(_db_numbers)}"
    postgres_server.start()  # in case an earlier test left it stopped
    conninfo = postgres_server.create_database(name)
    yield conninfo
    postgres_server.start()  # the test may have stopped it
    postgres_server.drop_database(name)
