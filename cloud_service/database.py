"""The cloud's database engines: one small interface over SQLite and PostgreSQL.

* **SQLite** (the embedded default for one host): one connection in WAL mode with
  ``synchronous=FULL`` (an answer the service replays after a power cut must still be there),
  used under a lock from worker threads.
* **PostgreSQL** (``postgresql://...``; state shared by replicas on many hosts): a
  ``psycopg_pool`` pool of autocommit connections, each checked before it is lent, so a database
  restart costs the requests that were running at that moment and nothing after it.

Queries of the stored frames go through ``read_session()``: on SQLite a second, query-only
connection (WAL lets it read while the writer commits), on PostgreSQL a pool of its own. A slow
read therefore never holds the lock or the connection an upload is waiting for.

Both stores (results, idempotency) write SQL once, with ``?`` placeholders, and run it through
``Database.session()``. A driver error that says the database cannot be reached becomes
``StoreUnavailable``, which the service answers with 503 and Retry-After: the edge keeps the frame
and sends it again. Schemas are created by numbered migrations (``migrate``), under a lock, so
replicas that start together never race to create a table.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Run = Callable[..., Any]  # run(sql, params=()) -> cursor
Migration = tuple[int, list[str], list[str]]  # (version, SQLite statements, PostgreSQL statements)
MIGRATION_LOCK = 0x5350_4943  # "SPIC": the advisory lock replicas take to migrate one at a time
READ_POOL_SIZE = 2  # PostgreSQL connections for queries, beside the writers' pool


class StoreUnavailable(Exception):
    """The database cannot be reached or is busy; the request may succeed if retried."""


class Database:
    engine: str
    damaged: str | None = None  # why the database's file is known to be unusable, if it is

    @contextmanager
    def session(self) -> Iterator[Run]:
        """A connection for a few statements in a row (autocommit each)."""
        raise NotImplementedError
        yield  # pragma: no cover

    @contextmanager
    def read_session(self) -> Iterator[Run]:
        """A connection for queries only, apart from the one writes use (opened on first use)."""
        raise NotImplementedError
        yield  # pragma: no cover

    @contextmanager
    def transaction(self) -> Iterator[Run]:
        """The statements in one transaction, exclusive among this database's migrators."""
        raise NotImplementedError
        yield  # pragma: no cover

    def refuse_if_damaged(self) -> None:
        if self.damaged:
            raise StoreUnavailable(f"database damaged: {self.damaged}")

    def check(self, thorough: bool = False) -> None:
        """Raise ``StoreUnavailable`` unless the database answers a query (readiness); with
        ``thorough``, unless its file is sound too (SQLite)."""
        self.refuse_if_damaged()
        with self.session() as run:
            run("SELECT 1").fetchall()

    def close(self) -> None:
        raise NotImplementedError


class SqliteDatabase(Database):
    engine = "sqlite"

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self._lock = threading.Lock()  # one connection, used from worker threads
        self.reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()

    def _run(
        self, sql: str, params: Sequence[Any] = (), conn: sqlite3.Connection | None = None
    ) -> Any:
        return (conn or self.conn).execute(sql, params)

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        """The engine's failures as ``StoreUnavailable``, raised by a statement or by reading its
        rows: locked past the timeout, disk I/O, and a damaged file ("database disk image is
        malformed"), which is remembered in ``damaged`` (readiness reports it). Errors that are
        the caller's (constraints, misuse) stay what they are."""
        try:
            yield
        except (sqlite3.OperationalError, sqlite3.InternalError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:  # IntegrityError, DataError, ...
                raise
            self.damaged = str(exc)  # SQLITE_CORRUPT, SQLITE_NOTADB: retrying will not help
            raise StoreUnavailable(str(exc)) from exc

    @contextmanager
    def session(self) -> Iterator[Run]:
        with self._lock, self._mapped():
            yield self._run

    @contextmanager
    def read_session(self) -> Iterator[Run]:
        with self._read_lock, self._mapped():
            if self.reader is None:
                reader = sqlite3.connect(
                    self.path, timeout=30, check_same_thread=False, isolation_level=None
                )
                reader.execute("PRAGMA query_only=ON")
                self.reader = reader
            yield functools.partial(self._run, conn=self.reader)

    @contextmanager
    def transaction(self) -> Iterator[Run]:
        with self._lock, self._mapped():
            self.conn.execute("BEGIN IMMEDIATE")  # the write lock: other processes wait
            try:
                yield self._run
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def check(self, thorough: bool = False) -> None:
        self.refuse_if_damaged()
        if thorough:  # reads every page: seconds for a large file, so once, off the request path,
            with self.read_session() as run:  # on the reader: uploads keep the writer
                problems = [str(r[0]) for r in run("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                self.damaged = "; ".join(problems)[:500]
        super().check()

    def close(self) -> None:
        with self._read_lock:
            if self.reader is not None:
                self.reader.close()
        with self._lock:
            self.conn.close()


class PostgresDatabase(Database):
    engine = "postgresql"

    def __init__(self, url: str, max_size: int = 4, timeout_s: float = 5.0):
        import psycopg  # the cloud extra's optional engine; imported only when asked for
        from psycopg_pool import PoolTimeout

        self._errors: tuple[type[BaseException], ...] = (
            psycopg.OperationalError,
            psycopg.InterfaceError,
        )
        self._pool_timeout: type[BaseException] = PoolTimeout
        self._url, self._timeout_s = url, timeout_s
        self.read_pool: Any = None  # opened by the first read_session()
        self._read_pool_lock = threading.Lock()
        # open=True connects in the background; the stores' migrations at start-up wait for a
        # connection, so a replica started while the database is down exits, and its supervisor
        # (compose's restart policy, a Kubernetes Deployment) starts it again.
        # max_size: the stores' worker threads; more would only queue in PostgreSQL
        self.pool = self._open_pool(url, max_size, timeout_s, "spic")

    @staticmethod
    def _open_pool(url: str, max_size: int, timeout_s: float, name: str) -> Any:
        from psycopg_pool import ConnectionPool

        return ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,  # a connection a restart broke is replaced
            timeout=timeout_s,  # how long a request waits for a connection before 503
            open=True,
            name=name,
        )

    @contextmanager
    def _connection(self, pool: Any = None) -> Iterator[Any]:
        try:
            with (pool or self.pool).connection() as conn:
                yield conn
        except self._pool_timeout as exc:  # checked first: PoolTimeout is an OperationalError
            raise StoreUnavailable(f"no database connection: {exc}") from exc
        except self._errors as exc:
            raise StoreUnavailable(str(exc)) from exc

    @staticmethod
    def _runner(conn: Any) -> Run:
        def run(sql: str, params: Sequence[Any] = ()) -> Any:
            return conn.execute(sql.replace("?", "%s"), params)

        return run

    @contextmanager
    def session(self) -> Iterator[Run]:
        with self._connection() as conn:
            yield self._runner(conn)

    @contextmanager
    def read_session(self) -> Iterator[Run]:
        with self._read_pool_lock:
            if self.read_pool is None:
                self.read_pool = self._open_pool(
                    self._url, READ_POOL_SIZE, self._timeout_s, "spic-read"
                )
        with self._connection(self.read_pool) as conn:
            yield self._runner(conn)

    @contextmanager
    def transaction(self) -> Iterator[Run]:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            yield self._runner(conn)

    def close(self) -> None:
        with self._read_pool_lock:
            if self.read_pool is not None:
                self.read_pool.close()
        self.pool.close()


def open_database(url: str, sqlite_path: str | Path) -> Database:
    """PostgreSQL for ``postgresql://...``; otherwise SQLite at ``sqlite_path``."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    if url:
        raise ValueError(f"unsupported SPIC_CLOUD_DATABASE_URL {url!r}: postgresql://...")
    return SqliteDatabase(sqlite_path)


def migrate(db: Database, table: str, migrations: Sequence[Migration]) -> int:
    """Apply the migrations newer than those recorded in ``table``; the version now."""
    with db.transaction() as run:
        run(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
        row = run(f"SELECT MAX(version) FROM {table}").fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        for version, sqlite_sql, postgres_sql in migrations:
            if version <= current:
                continue
            for statement in sqlite_sql if db.engine == "sqlite" else postgres_sql:
                run(statement)
            run(f"INSERT INTO {table} (version) VALUES (?)", (version,))
            current = version
    return current
