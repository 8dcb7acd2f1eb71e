"""``backup create`` and ``backup keys``: a snapshot written into an encrypted backup file.

A data backup holds every table except ``data_keys``; a key export holds only ``data_keys``
(each key still wrapped by the vault's KEK, and the whole file encrypted with the backup key).
Keeping them apart is what lets crypto-shredding reach backups: a user's data key destroyed
after a data backup was taken is absent from every later key source (docs/backup.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import MetaData, Table

from echo_identity.backup import rows
from echo_identity.backup.container import ContainerWriter
from echo_identity.backup.snapshot import Progress, open_snapshot
from echo_identity.crypto.kek import KekProvider
from echo_identity.db import Database, utcnow
from echo_identity.keys.models import DataKey

DATA_KEYS_TABLE = DataKey.__tablename__
DATA = "data"
KEYS = "keys"


@dataclass(frozen=True)
class BackupSummary:
    """What was written: the kind, the backup key's id, the schema revision, the dialect, the
    rows per table and the file's size."""

    kind: str
    key_id: str
    schema_revision: str
    dialect: str
    row_counts: dict[str, int]
    size: int


def data_tables(metadata: MetaData) -> list[Table]:
    """The tables of a data backup, parents before children: all but ``data_keys``."""
    return [table for table in metadata.sorted_tables if table.name != DATA_KEYS_TABLE]


def create_backup(
    database: Database,
    out: BinaryIO,
    keys: KekProvider,
    metadata: MetaData,
    progress: Progress | None = None,
) -> BackupSummary:
    """Write a data backup of ``database`` (every table of ``metadata`` but ``data_keys``,
    from one consistent snapshot) to ``out``, encrypted under the backup key ``keys``.

    Raises:
        BackupError: the database cannot be read or has no schema.
        KmsWrapError: a KMS backup key refused to wrap the content key.
    """
    return _write(database, out, keys, DATA, data_tables(metadata), progress)


def export_data_keys(
    database: Database, out: BinaryIO, keys: KekProvider, progress: Progress | None = None
) -> BackupSummary:
    """Write the ``data_keys`` table of ``database`` to ``out``, encrypted under ``keys``: the
    key source for a restore after the live database is lost. Raises as :func:`create_backup`.
    """
    table = DataKey.__table__
    assert isinstance(table, Table)
    return _write(database, out, keys, KEYS, [table], progress)


def _write(
    database: Database,
    out: BinaryIO,
    keys: KekProvider,
    kind: str,
    tables: Sequence[Table],
    progress: Progress | None,
) -> BackupSummary:
    with open_snapshot(database, progress) as snapshot:
        counts = {table.name: snapshot.count(table) for table in tables}
        total = sum(counts.values())
        fields = {
            "kind": kind,
            "schema_revision": snapshot.revision,
            "dialect": snapshot.dialect,
            "created_at": utcnow().isoformat(timespec="microseconds"),
            "tables": counts,
        }
        writer = ContainerWriter(out, fields, keys)
        done = 0
        for table in tables:
            writer.write(rows.start_line(table))
            kinds = [column_kind for _, column_kind in rows.table_columns(table)]
            written = 0
            for row in snapshot.rows(table):
                writer.write(rows.row_line(kinds, row))
                written += 1
                done += 1
                if progress is not None and done % 1000 == 0:
                    progress("writing", done, total)
            writer.write(rows.end_line(table.name, written))
        writer.close()
        if progress is not None:
            progress("writing", done, total)
    return BackupSummary(
        kind, writer.key_id, snapshot.revision, snapshot.dialect, counts, writer.bytes_written
    )
