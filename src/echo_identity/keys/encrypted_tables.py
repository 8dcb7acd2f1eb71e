"""How phase 2 of DEK rotation (:mod:`echo_identity.keys.reencryption`) reads an encrypted
table and writes a re-encrypted batch back: the read statement and where each encrypted column
sits in its rows (:class:`Slot`), the query for what is stored now, and the conditional batch
update.

The update depends on the database: on PostgreSQL with psycopg one ``UPDATE … FROM
unnest(arrays)`` per batch (:class:`ArrayUpdate`), elsewhere one precompiled ``UPDATE`` per
row through the driver's ``executemany`` (:class:`RowUpdates`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Column, Dialect, bindparam, inspect, or_, select, update
from sqlalchemy import Connection as SqlConnection

from echo_identity.keys.columns import EncryptedColumn

__all__ = ["ArrayUpdate", "Batch", "EncryptedTable", "RowUpdates", "Slot", "Writer"]


class Slot(NamedTuple):
    """One encrypted column of a table: where its owner and ciphertext sit in a read row, and
    its context template split around ``{row}``, because concatenating the parts (once per
    ciphertext) costs less than ``str.format`` (:class:`EncryptedColumn` checks that both
    give the same context)."""

    encrypted: EncryptedColumn
    owner_at: int
    ciphertext_at: int
    context_head: str
    context_tail: str
    owners: dict[object, str]  # owner column value -> owner, filled as rows are met

    @classmethod
    def of(cls, encrypted: EncryptedColumn, owner_at: int) -> Slot:
        head, _, tail = encrypted.context.partition("{row}")
        return cls(encrypted, owner_at, owner_at + 1, head, tail, {})

    def owner_for(self, value: object) -> str:
        owner = self.owners.get(value)
        if owner is None:
            owner = self.owners[value] = self.encrypted.owner_for(value)
        return owner


class EncryptedTable:
    """The encrypted columns of one table, re-encrypted together: one read per batch and one
    write per batch (see :attr:`writer`)."""

    def __init__(self, encrypted_columns: tuple[EncryptedColumn, ...], dialect: Dialect) -> None:
        mapper = inspect(encrypted_columns[0].column.class_)
        self.table = mapper.local_table
        self.key: Column[Any] = mapper.primary_key[0]
        self.encrypted_columns = encrypted_columns
        self.slots: list[Slot] = []
        columns: list[Any] = [self.key]
        for encrypted in encrypted_columns:
            self.slots.append(Slot.of(encrypted, len(columns)))
            owner = encrypted.owner_column if encrypted.owner_column is not None else self.key
            columns += [owner, encrypted.column]
        self.read = (
            select(*columns)
            .where(or_(*(encrypted.column.is_not(None) for encrypted in encrypted_columns)))
            .order_by(self.key)
        )
        self.writer: Writer = (
            ArrayUpdate(self, dialect)
            if (dialect.name, dialect.driver) == ("postgresql", "psycopg")
            else RowUpdates(self, dialect)
        )

    @classmethod
    def all(
        cls, encrypted_columns: Collection[EncryptedColumn], dialect: Dialect
    ) -> list[EncryptedTable]:
        """One per table of ``encrypted_columns``, in the order the tables first appear."""
        by_table: dict[Any, list[EncryptedColumn]] = {}
        for encrypted in encrypted_columns:
            by_table.setdefault(encrypted.column.class_, []).append(encrypted)
        return [cls(tuple(group), dialect) for group in by_table.values()]

    def stored(self, connection: SqlConnection, keys: list[Any]) -> dict[Any, list[Any]]:
        """The ciphertexts now stored in the rows with these primary keys."""
        columns = [encrypted.column for encrypted in self.encrypted_columns]
        statement = select(self.key, *columns).where(self.key.in_(keys))
        return {row[0]: list(row[1:]) for row in connection.execute(statement)}


@dataclass
class Batch:
    """One batch after re-encryption: for each changed row its key and, per slot, the
    ciphertext that was read (``old``) and the one to write (``new``, the same when that
    slot was not re-encrypted)."""

    table: EncryptedTable
    keys: list[Any]
    old: list[list[bytes | None]]
    new: list[list[bytes | None]]
    examined: int
    reencrypted: int
    changed_concurrently: int = 0


class Writer(Protocol):
    """Writes a batch: each row only if all its ciphertexts are still the ones read, so a
    concurrent refresh always wins. Columns with an ``onupdate`` default (``updated_at``)
    keep their value: re-encryption changes no data."""

    def update(self, connection: SqlConnection, batch: Batch) -> int:
        """Apply ``batch``; returns how many rows still held the old ciphertexts and were
        updated."""


class RowUpdates:
    """One ``UPDATE <table> SET <column> = ?, ... WHERE <key> = ? AND <column> IS NOT DISTINCT
    FROM ? AND ...`` per row. The SQL is compiled once and run through the driver's
    ``executemany``, because SQLAlchemy's per-row bind processing costs more than the update
    itself. On SQLite, in-process, this is the fastest way."""

    def __init__(self, table: EncryptedTable, dialect: Dialect) -> None:
        slots = range(len(table.slots))
        statement = (
            update(table.table)
            .where(
                table.key == bindparam("b_key"),
                *(
                    slot.encrypted.column.is_not_distinct_from(bindparam(f"old_{i}"))
                    for i, slot in enumerate(table.slots)
                ),
            )
            .values(
                {slot.encrypted.column: bindparam(f"new_{i}") for i, slot in enumerate(table.slots)}
                | {column: column for column in table.table.columns if column.onupdate is not None}
            )
        )
        compiled = statement.compile(dialect=dialect)
        self._sql = str(compiled)
        names = ["b_key"] + [f"{kind}_{i}" for i in slots for kind in ("old", "new")]
        order = compiled.positiontup if compiled.positional else None
        # Where each bound parameter comes from in (key, old_0, new_0, old_1, new_1, ...).
        self._order = [names.index(name) for name in order] if order is not None else None
        self._names = names

    def update(self, connection: SqlConnection, batch: Batch) -> int:
        rows = [
            [key, *(value for pair in zip(old, new, strict=True) for value in pair)]
            for key, old, new in zip(batch.keys, batch.old, batch.new, strict=True)
        ]
        parameters: list[Any]
        if self._order is not None:
            parameters = [tuple(row[i] for i in self._order) for row in rows]
        else:
            parameters = [dict(zip(self._names, row, strict=True)) for row in rows]
        return connection.exec_driver_sql(self._sql, parameters).rowcount


class ArrayUpdate:
    """One statement per batch on PostgreSQL with psycopg::

        UPDATE <table> AS target SET <column> = batch.new_0, ...
        FROM unnest(<keys>, <old_0>, <new_0>, ...) AS batch(key, old_0, new_0, ...)
        WHERE target.<key> = batch.key AND target.<key> BETWEEN <first> AND <last>
          AND target.<column> IS NOT DISTINCT FROM batch.old_0 AND ...

    The arrays travel in psycopg's binary format (``%b``), which costs a few microseconds per
    row; the text format escapes every byte of every ciphertext and costs ten times more. The
    key range lets the planner read only the batch's part of the primary-key index. Only
    ciphertext columns change, and none is indexed, so with free space in the page
    (``fillfactor``, migration 0007) PostgreSQL updates the rows in place (HOT) instead of
    adding an entry to every index of the table.
    """

    def __init__(self, table: EncryptedTable, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        key = quote(table.key.name)
        columns = [quote(slot.encrypted.column.property.columns[0].name) for slot in table.slots]
        types = [slot.encrypted.column.type.compile(dialect) for slot in table.slots]
        arrays = [f"%b::{table.key.type.compile(dialect)}[]"] + [
            f"%b::{type_}[], %b::{type_}[]" for type_ in types
        ]
        names = ["key"] + [f"old_{i}, new_{i}" for i in range(len(columns))]
        # Built only from the mapped table's identifiers (quoted by the dialect) and column
        # types; every value travels as a bound parameter.
        self._sql = (
            f"UPDATE {dialect.identifier_preparer.format_table(table.table)} AS target SET "  # noqa: S608
            + ", ".join(f"{column} = batch.new_{i}" for i, column in enumerate(columns))
            + f" FROM unnest({', '.join(arrays)}) AS batch({', '.join(names)})"
            + f" WHERE target.{key} = batch.key AND target.{key} BETWEEN %b AND %b"
            + "".join(
                f" AND target.{column} IS NOT DISTINCT FROM batch.old_{i}"
                for i, column in enumerate(columns)
            )
        )

    def update(self, connection: SqlConnection, batch: Batch) -> int:
        arrays: list[Any] = [batch.keys]
        for i in range(len(batch.old[0])):
            arrays += [[old[i] for old in batch.old], [new[i] for new in batch.new]]
        parameters = (*arrays, batch.keys[0], batch.keys[-1])
        return connection.exec_driver_sql(self._sql, parameters).rowcount
