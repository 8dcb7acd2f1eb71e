"""Engine, sessions and the declarative base; migrations live in ``migrations/`` beside this file.

One :class:`Database` per process wraps the engine. A request's session is opened and closed
by the web layer (``web.context.request_session``); services receive a session in their
constructor and flush, and the request, worker job or command commits its unit of work.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Executable, MetaData, create_engine, event, text
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.types import TypeDecorator

from echo_identity.config import database_url_for_sqlalchemy

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _sqlite_begin): pysqlite's own implicit BEGIN
    # breaks SAVEPOINTs and cannot take the write lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


# Execution options of a unit of work that only reads: on SQLite it begins ``DEFERRED`` and
# never takes the write lock (see _sqlite_begin); other databases ignore the option.
READ_ONLY: Mapping[str, Any] = {"sqlite_begin": "DEFERRED"}


def _sqlite_begin(connection: Connection) -> None:
    """BEGIN IMMEDIATE: take SQLite's single write lock when the transaction starts.

    A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    another connection committed in between (WAL snapshot rule; busy_timeout cannot help), so
    under concurrency every read-then-write request would be at risk. Starting immediately
    queues writers on busy_timeout instead (the same choice Rails made for SQLite). A unit of
    work that only reads may ask for ``execution_options=READ_ONLY``.
    """
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


class _Reader:
    """One thread's read connection, closed when the holder is collected: at the latest when
    its thread ends and the thread-local storage holding it is cleared."""

    def __init__(self, connection: Connection, generation: int) -> None:
        self.connection = connection
        self.generation = generation
        weakref.finalize(self, _close_quietly, connection)


def _close_quietly(connection: Connection) -> None:
    # a connection that died with its thread's work has nothing left to release
    with contextlib.suppress(Exception):
        connection.close()


class Database:
    """The engine and session factory for one database URL, and each thread's read connection.

    Hot read paths (a client by id, a token's revocation state) use :meth:`read_row` /
    :meth:`read_rows`: one autocommit connection per thread, opened on first use and kept, so
    a read costs one statement and no pool checkout, ``BEGIN`` or rollback. Each statement
    sees what was committed when it ran (its own snapshot); a unit of work that needs one
    snapshot for several statements, or its own uncommitted writes, uses a session.
    """

    def __init__(self, url: str) -> None:
        url = database_url_for_sqlalchemy(url)
        self.url = url
        sqlite = url.startswith("sqlite")
        # hide_parameters keeps bound values (hashes, digests, tokens) out of error messages.
        # A SQLite file connection cannot go stale; pinging it would cost a query per checkout.
        self.engine: Engine = create_engine(url, hide_parameters=True, pool_pre_ping=not sqlite)
        # Read connections live as long as their thread, outside the pool (whose size bounds
        # the request sessions); closed by dispose(). Autocommit: never holds a snapshot.
        self._read_engine: Engine = create_engine(
            url,
            hide_parameters=True,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={"check_same_thread": False} if sqlite else {},
        )
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
            event.listen(self._read_engine, "connect", _sqlite_pragmas)  # no BEGIN: autocommit
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Each thread's reader is closed by that thread: when it ends (its thread-local holder
        # is collected), so threads that come and go (a server's idle threads retired, a
        # thread per request) never pile up connections, or on its next read after dispose()
        # (a connection is never closed under another thread that may be using it).
        self._local = threading.local()
        self._generation = 0
        self._on_dispose: list[Callable[[], None]] = []

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self._sessions()

    def read_session(self) -> Session:
        """A session for reading only: on SQLite it never takes the write lock, so it cannot
        wait on (or deadlock with) a writer, e.g. the current request's own session."""
        session = self._sessions()
        session.connection(execution_options=READ_ONLY)
        return session

    def read_row(self, statement: Executable, params: Mapping[str, Any]) -> RowMapping | None:
        """The first row of a read-only Core ``statement``, or ``None``, on this thread's read
        connection (see the class docstring): no ORM session, no transaction, and (on SQLite)
        never the write lock. For hot paths."""
        rows = self.read_rows(statement, params)
        return rows[0] if rows else None

    def read_rows(self, statement: Executable, params: Mapping[str, Any]) -> list[RowMapping]:
        """Every row of a read-only Core ``statement`` on this thread's read connection.

        A connection the server dropped (a PostgreSQL restart) is replaced and the statement
        tried once more on the new one.
        """
        for attempt in (1, 2):
            connection = self._reader()
            try:
                return list(connection.execute(statement, params).mappings())
            except DBAPIError as error:
                self._drop_reader(connection)
                if attempt == 2 or not error.connection_invalidated:
                    raise
            finally:
                if not connection.closed:
                    connection.rollback()  # ends SQLAlchemy's logical transaction; no SQL
        raise AssertionError("unreachable")

    def _reader(self) -> Connection:
        holder: _Reader | None = getattr(self._local, "reader", None)
        if holder is not None and (
            holder.generation != self._generation or holder.connection.closed
        ):
            _close_quietly(holder.connection)  # from before a dispose(): closed here, by us
            holder = None
        if holder is None:
            holder = _Reader(self._read_engine.connect(), self._generation)
            self._local.reader = holder
        return holder.connection

    def _drop_reader(self, connection: Connection) -> None:
        self._local.reader = None
        connection.invalidate()

    def on_dispose(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` first when :meth:`dispose` runs (a collaborator above this layer
        that holds a connection of its own: the audit writer)."""
        self._on_dispose.append(callback)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as connection:
                connection.execution_options(**READ_ONLY).execute(text("SELECT 1"))
        except Exception:  # any driver error means "not ready"
            return False
        return True

    def dispose(self) -> None:
        """Stop what holds connections (:meth:`on_dispose`), close this thread's read
        connection and the pool; every other thread closes its read connection itself, on
        its next read or when it ends. The database stays usable: connections reopen on
        demand."""
        for callback in self._on_dispose:
            callback()
        self._generation += 1  # other threads replace (and close) their reader on next use
        holder: _Reader | None = getattr(self._local, "reader", None)
        if holder is not None:
            self._local.reader = None
            holder.connection.close()
        self.engine.dispose()
        self._read_engine.dispose()
