"""One consistent, online snapshot of the database to read every table from.

- SQLite: the ``sqlite3`` online backup API copies the live file, including what is still in
  its write-ahead log, into a temporary file; the tables are read from that copy. A plain
  copy of the file would miss the last commits (and every seal) still in the WAL.
- PostgreSQL: one ``REPEATABLE READ, READ ONLY`` transaction reads every table, so all of
  them show the same moment while the service keeps writing.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from echo_identity.backup.errors import BackupError
from echo_identity.db import Database

FETCH_SIZE = 1000
Progress = Callable[[str, int, int | None], None]
"""Told ``(stage, done, total)`` as work advances; ``total`` is ``None`` while unknown."""


@dataclass(frozen=True)
class Snapshot:
    """An open snapshot: read tables through :meth:`count` and :meth:`rows`."""

    connection: Connection
    dialect: str
    revision: str

    def count(self, table: Table) -> int:
        return int(self.connection.scalar(select(func.count()).select_from(table)) or 0)

    def rows(self, table: Table) -> Generator[Sequence[Any], None, None]:
        """Every row of ``table`` in primary-key order, fetched :data:`FETCH_SIZE` at a time
        (a server-side cursor on PostgreSQL), so a big table costs constant memory."""
        statement = select(table).order_by(*table.primary_key.columns)
        result = self.connection.execution_options(yield_per=FETCH_SIZE).execute(statement)
        try:
            yield from result
        finally:
            result.close()


@contextmanager
def open_snapshot(database: Database, progress: Progress | None = None) -> Iterator[Snapshot]:
    """A consistent snapshot of ``database`` (see the module docstring), released on exit.

    Raises:
        BackupError: the database is an in-memory SQLite database, cannot be read, or has no
            schema (no Alembic revision).
    """
    try:
        if database.dialect == "sqlite":
            with _sqlite_copy(database, progress) as snapshot:
                yield snapshot
        else:
            with database.engine.connect() as connection:
                connection = connection.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
                with connection.begin():
                    yield Snapshot(connection, database.dialect, _revision(connection))
    except SQLAlchemyError as exc:
        raise BackupError(
            f"the database could not be read ({type(exc).__name__}); is it reachable and migrated?"
        ) from None


@contextmanager
def _sqlite_copy(database: Database, progress: Progress | None) -> Iterator[Snapshot]:
    source = database.engine.url.database
    if not source or source == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    with tempfile.TemporaryDirectory(prefix="echo-backup-") as scratch:
        copy = Path(scratch) / "snapshot.db"
        try:  # read-only: a mistyped path must not leave an empty database behind
            live = sqlite3.connect(f"{Path(source).resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise BackupError(f"the SQLite database {source} cannot be opened: {exc}") from None
        target = sqlite3.connect(copy)
        try:
            live.backup(
                target,
                pages=1024,
                progress=(
                    (lambda _status, left, total: progress("snapshot", total - left, total))
                    if progress is not None
                    else None
                ),
            )
        except sqlite3.Error as exc:
            raise BackupError(f"the SQLite database could not be copied: {exc}") from None
        finally:
            target.close()
            live.close()
        engine = create_engine(f"sqlite:///{copy}", poolclass=NullPool)
        try:
            with engine.connect() as connection:
                yield Snapshot(connection, "sqlite", _revision(connection))
        finally:
            engine.dispose()


def _revision(connection: Connection) -> str:
    try:
        revision = connection.scalar(text("SELECT version_num FROM alembic_version"))
    except SQLAlchemyError:
        revision = None
    if not revision:
        raise BackupError("the database has no schema; run: echo-identity db upgrade")
    return str(revision)
