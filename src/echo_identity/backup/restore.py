"""``backup restore``: a data backup into an empty database, with the data keys of a key source.

In order: the whole file is authenticated first (nothing is written from a damaged file), the
target must hold no table at all, the schema is created by Alembic at the backup's revision,
the rows go in table by table (parents first) in batches in one transaction, together with
the data keys from the key source; on PostgreSQL every identity/serial sequence is moved past
the restored ids; then the schema is upgraded to the newest revision.

The data keys come from a key source (:class:`KeySource`): the live database (by default the
configured ``ECHO_DATABASE_URL``) or a key export file (``backup keys``). A data key destroyed
since the backup was taken is absent there, so what it encrypted stays unreadable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import MetaData, Table, insert, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from echo_identity.backup import rows
from echo_identity.backup.container import Header, read_content
from echo_identity.backup.create import DATA, DATA_KEYS_TABLE, KEYS
from echo_identity.backup.errors import (
    BackupCorruptError,
    BackupError,
    KeySourceError,
    TargetNotEmptyError,
    UnknownRevisionError,
)
from echo_identity.backup.snapshot import Progress, open_snapshot
from echo_identity.crypto.kek import KekProvider
from echo_identity.db import Database
from echo_identity.keys.models import DataKey

BATCH_SIZE = 500
KeyRow = dict[str, Any]
KeySource = Callable[[], AbstractContextManager[Iterator[KeyRow]]]
"""Opens the data keys to restore: each one a ``data_keys`` row as a dict of column values."""


class SchemaMigrator(Protocol):
    """The schema migrations (Alembic, plugged in by the command line)."""

    def knows(self, revision: str) -> bool:
        """Whether ``revision`` is one of this code's migrations."""
        ...

    def upgrade(self, database: Database, revision: str) -> None:
        """Apply the migrations of ``database`` up to ``revision`` (``head``: the newest)."""
        ...


@dataclass(frozen=True)
class RestoreSummary:
    header: Header
    schema_revision: str
    row_counts: dict[str, int]
    data_keys: int


def check_file(path: Path, keys: KekProvider, progress: Progress | None = None) -> Header:
    """The header of backup ``path`` after every chunk was authenticated and the content
    parsed, with each table's row count checked against the header.

    Raises:
        NotABackupError, BackupTruncatedError, BackupCorruptError, BackupKeyError: see
            :func:`~echo_identity.backup.container.read_content`.
    """
    with path.open("rb") as stream:
        header, content = read_content(stream, keys)
        expected = header.row_counts
        total = sum(expected.values())
        done = 0
        for item in rows.parse(rows.lines_of(content)):
            if isinstance(item, list):
                done += 1
                if progress is not None and done % 1000 == 0:
                    progress("check", done, total)
            elif isinstance(item, rows.TableEnd):
                _check_count(expected, item)
        if progress is not None:
            progress("check", done, total)
    return header


def restore_backup(
    path: Path,
    target: Database,
    keys: KekProvider,
    metadata: MetaData,
    migrator: SchemaMigrator,
    key_source: KeySource,
    progress: Progress | None = None,
) -> RestoreSummary:
    """Restore the data backup ``path`` into the empty database ``target`` (see the module
    docstring); ``metadata`` holds this code's tables.

    Raises:
        NotABackupError, BackupTruncatedError, BackupCorruptError, BackupKeyError: the file
            is damaged or its key is not configured (nothing was written).
        UnknownRevisionError: the backup's schema revision is not one of this code's.
        TargetNotEmptyError: ``target`` holds tables (nothing was written).
        KeySourceError: the data keys could not be read.
        BackupError: the target database failed while restoring.
    """
    header = check_file(path, keys, progress)
    if header.kind != DATA:
        raise BackupError(
            f"{path} is a {header.kind or 'unknown'} file, not a data backup; a key export is "
            "given to restore with --keys"
        )
    revision = header.schema_revision
    if not migrator.knows(revision):
        raise UnknownRevisionError(
            f"the backup's schema revision {revision!r} is unknown to this version of Echo "
            "Identity; restore it with the version that made it (or a newer one)"
        )
    _require_empty(target)
    _check_key_source(key_source)
    try:
        migrator.upgrade(target, revision)
        with target.engine.begin() as connection:
            counts = _insert_rows(path, keys, connection, metadata, header, progress)
            data_keys = _insert_data_keys(connection, metadata, key_source)
            if connection.dialect.name == "postgresql":
                _reset_sequences(connection, [_table(connection, metadata, n) for n in counts])
        migrator.upgrade(target, "head")
    except SQLAlchemyError as exc:
        raise BackupError(
            f"the target database failed during the restore ({type(exc).__name__}); drop what "
            "was created and run the restore again"
        ) from None
    return RestoreSummary(header, revision, counts, data_keys)


def data_keys_from_database(database: Database) -> KeySource:
    """The data keys of a live database, read in one snapshot."""
    return partial(_database_keys, database)


def data_keys_from_export(path: Path, keys: KekProvider) -> KeySource:
    """The data keys of a key export file (``backup keys``), decrypted with the backup key."""
    return partial(_exported_keys, path, keys)


@contextmanager
def _database_keys(database: Database) -> Iterator[Iterator[KeyRow]]:
    table = DataKey.__table__
    assert isinstance(table, Table)
    names = [column.name for column in table.columns]
    try:
        with open_snapshot(database) as snapshot:
            found = snapshot.rows(table)
            try:
                yield (dict(zip(names, row, strict=True)) for row in found)
            finally:
                found.close()  # its cursor, while the snapshot's connection is still open
    except BackupError as exc:
        raise KeySourceError(
            f"the data keys could not be read from the key source database: {exc.description}"
        ) from None


@contextmanager
def _exported_keys(path: Path, keys: KekProvider) -> Iterator[Iterator[KeyRow]]:
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise KeySourceError(f"the key export {path} cannot be read: {exc.strerror}") from None
    with stream:
        header, content = read_content(stream, keys)
        if header.kind != KEYS:
            raise KeySourceError(f"{path} is not a key export (made by: echo-identity backup keys)")
        yield _key_rows(header, content)


def _key_rows(header: Header, content: Iterator[bytes]) -> Iterator[KeyRow]:
    columns: tuple[tuple[str, str], ...] = ()
    for item in rows.parse(rows.lines_of(content)):
        if isinstance(item, rows.TableStart):
            columns = item.columns
        elif isinstance(item, rows.TableEnd):
            _check_count(header.row_counts, item)
        else:
            values = rows.decode_row([kind for _, kind in columns], item)
            yield dict(zip([name for name, _ in columns], values, strict=True))


def _check_key_source(key_source: KeySource) -> None:
    """Read the first data key, so an unreadable key source stops the restore before the
    target is touched.

    Raises:
        KeySourceError: the key source cannot be opened or read.
        BackupError: a key export is damaged or needs another backup key.
    """
    with key_source() as data_keys:
        next(data_keys, None)


def _check_count(expected: dict[str, int], end: rows.TableEnd) -> None:
    if expected.get(end.table) != end.rows:
        raise BackupCorruptError(
            f"table {end.table} holds {end.rows} rows but the header says {expected.get(end.table)}"
        )


def _require_empty(target: Database) -> None:
    try:
        tables = inspect(target.engine).get_table_names()
    except SQLAlchemyError as exc:
        raise BackupError(
            f"the target database cannot be reached ({type(exc).__name__}); check --database-url"
        ) from None
    if tables:
        shown = ", ".join(sorted(tables)[:3]) + (" …" if len(tables) > 3 else "")
        raise TargetNotEmptyError(
            f"the target database is not empty (it holds {len(tables)} tables: {shown}); "
            "restore only into a new, empty database"
        )


def _table(connection: Connection, metadata: MetaData, name: str) -> Table:
    """This code's table ``name``, or the target's own (reflected) when the code no longer
    has it (a backup from an older schema)."""
    table = metadata.tables.get(name)
    return table if table is not None else Table(name, MetaData(), autoload_with=connection)


def _insert_rows(
    path: Path,
    keys: KekProvider,
    connection: Connection,
    metadata: MetaData,
    header: Header,
    progress: Progress | None,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    total = sum(header.row_counts.values())
    done = 0
    with path.open("rb") as stream:
        _, content = read_content(stream, keys)
        table: Table | None = None
        names: list[str] = []
        kinds: list[str] = []
        batch: list[dict[str, Any]] = []
        for item in rows.parse(rows.lines_of(content)):
            if isinstance(item, rows.TableStart):
                table = _table(connection, metadata, item.table)
                names = [name for name, _ in item.columns]
                kinds = [kind for _, kind in item.columns]
            elif isinstance(item, rows.TableEnd):
                assert table is not None
                if batch:
                    connection.execute(insert(table), batch)
                    batch = []
                _check_count(header.row_counts, item)
                counts[item.table] = item.rows
            else:
                batch.append(dict(zip(names, rows.decode_row(kinds, item), strict=True)))
                done += 1
                if len(batch) >= BATCH_SIZE:
                    assert table is not None
                    connection.execute(insert(table), batch)
                    batch = []
                    if progress is not None:
                        progress("restore", done, total)
    if progress is not None:
        progress("restore", done, total)
    return counts


def _insert_data_keys(connection: Connection, metadata: MetaData, key_source: KeySource) -> int:
    table = _table(connection, metadata, DATA_KEYS_TABLE)
    count = 0
    batch: list[KeyRow] = []
    with key_source() as data_keys:
        for row in data_keys:
            batch.append(row)
            count += 1
            if len(batch) >= BATCH_SIZE:
                connection.execute(insert(table), batch)
                batch = []
    if batch:
        connection.execute(insert(table), batch)
    return count


def _reset_sequences(connection: Connection, tables: list[Table]) -> None:
    """Move each identity/serial sequence past the largest restored id (explicit ids were
    inserted, so the sequences still stand at their start)."""
    for table in tables:
        for column in table.primary_key.columns:
            sequence = connection.scalar(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": table.name, "column": column.name},
            )
            if sequence is None:
                continue
            quoted = connection.dialect.identifier_preparer.quote
            connection.execute(
                text(
                    f"SELECT setval(:sequence, COALESCE(MAX({quoted(column.name)}), 1), "  # noqa: S608
                    f"MAX({quoted(column.name)}) IS NOT NULL) FROM {quoted(table.name)}"
                ),
                {"sequence": sequence},
            )
