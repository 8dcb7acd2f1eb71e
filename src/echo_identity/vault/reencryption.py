"""Phase 2 of DEK rotation: re-encrypt every ciphertext under a retired DEK with its owner's
current DEK, table by table, in batches in primary-key order.

Each batch is read in a short read-only transaction, re-encrypted in memory, and written in
one transaction of its own. A write is conditional on the row's ciphertexts being unchanged
since the read, so a token that a concurrent refresh has just written is never replaced with
stale data. No transaction stays open between batches: readers and writers of the service
never wait long on the rotation, and PostgreSQL can prune each batch's old row versions.

How a batch is written depends on the database (see :class:`_ArrayUpdate`): on PostgreSQL
with psycopg one ``UPDATE … FROM unnest(arrays)`` per batch, elsewhere one precompiled
``UPDATE`` per row through the driver's ``executemany``. The rotation itself (phases 1 and 3,
and which columns are encrypted) lives in :mod:`echo_identity.vault.rotation`.

Errors: :func:`reencrypt` raises nothing for a single unreadable ciphertext; it reports the
row in :attr:`Reencryption.failures` and leaves it as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Column, Dialect, bindparam, func, inspect, or_, select, update
from sqlalchemy import Connection as SqlConnection
from sqlalchemy.orm import InstrumentedAttribute, Session

from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError
from echo_identity.vault.keyring import Encryptor, Keyring

# A transaction that only reads. On SQLite it must not take the write lock (see db.py).
READ_ONLY = {"sqlite_begin": "DEFERRED"}
_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}

Progress = Callable[[int, int], None]
"""Called with (ciphertexts examined, ciphertexts in total) after each committed batch."""


@dataclass(frozen=True)
class EncryptedField:
    """A column of envelope ciphertexts: whose DEK encrypts it and the context that binds each
    value to its row and field.

    ``context`` is formatted with ``row`` (the primary key). ``owner`` is formatted with
    ``owner`` (the value of ``owner_column``); without an owner column it is used as is.
    """

    column: InstrumentedAttribute[Any]
    context: str
    owner: str
    owner_column: InstrumentedAttribute[Any] | None = None

    @property
    def name(self) -> str:
        """``table.column``, as in messages and reports."""
        return f"{inspect(self.column.class_).local_table.description}.{self.column.key}"

    def context_for(self, row: object) -> str:
        return self.context.format(row=row)

    def owner_for(self, owner: object) -> str:
        return self.owner.format(owner=owner)


@dataclass(frozen=True)
class ReencryptionFailure:
    """A ciphertext that phase 2 could not re-encrypt. Its DEK is kept."""

    field: str
    row: str
    code: str
    message: str


@dataclass
class Reencryption:
    """What phase 2 did. ``changed_concurrently`` counts rows that a concurrent writer changed
    between the read and the update; they keep the writer's value."""

    new_data_keys: int = 0
    ciphertexts: int = 0
    reencrypted: int = 0
    changed_concurrently: int = 0
    failures: list[ReencryptionFailure] = field(default_factory=list)


def reencrypt(
    session: Session,
    keyring: Keyring,
    fields: Collection[EncryptedField],
    retired: set[str],
    *,
    batch_size: int,
    progress: Progress | None = None,
    report: Reencryption | None = None,
) -> Reencryption:
    """Re-encrypt every ciphertext of ``fields`` whose header names a DEK in ``retired`` under
    its owner's current DEK (created, and committed, when the owner has none). Counts go to
    ``report`` (a new one by default), which is returned.

    ``session`` is used only through ``keyring`` and is committed after each batch; the rows
    are read and written on two connections of their own. An exception raised by
    ``progress`` stops the run after a committed batch.
    """
    report = report if report is not None else Reencryption()
    _Run(session, keyring, fields, retired, batch_size, progress, report).run()
    return report


class _Slot(NamedTuple):
    """One encrypted field of a table: where its owner and ciphertext sit in a read row, and
    its context template split around ``{row}``, because concatenating the parts (once per
    ciphertext) costs less than ``str.format``."""

    field: EncryptedField
    owner_at: int
    ciphertext_at: int
    context_head: str
    context_tail: str
    owners: dict[object, str]  # owner column value -> owner, filled as rows are met

    @classmethod
    def of(cls, encrypted: EncryptedField, owner_at: int) -> _Slot:
        head, _, tail = encrypted.context.partition("{row}")
        if f"{head}{{row}}{tail}".format(row="\0") != f"{head}\0{tail}":
            raise ValueError(f"{encrypted.name}: context needs exactly one {{row}} and no braces")
        return cls(encrypted, owner_at, owner_at + 1, head, tail, {})

    def owner_for(self, value: object) -> str:
        owner = self.owners.get(value)
        if owner is None:
            owner = self.owners[value] = self.field.owner_for(value)
        return owner


@dataclass
class _Batch:
    """One batch after re-encryption: for each changed row its key and, per slot, the
    ciphertext that was read (``old``) and the one to write (``new``, the same when that
    slot was not re-encrypted)."""

    table: _EncryptedTable
    keys: list[Any]
    old: list[list[bytes | None]]
    new: list[list[bytes | None]]
    examined: int
    reencrypted: int
    changed_concurrently: int = 0


class _Run:
    """Phase 2. This thread reads each batch through its own read-only connection and
    re-encrypts it, using the session only through the Keyring. A writer thread applies the
    batch in one transaction of a second connection. While the writer applies batch N, this
    thread prepares batch N+1, so the database works on the updates while the CPU works on the
    crypto. At most one batch is in flight, and progress is reported once the writer has
    committed a batch."""

    def __init__(
        self,
        session: Session,
        keyring: Keyring,
        fields: Collection[EncryptedField],
        retired: set[str],
        batch_size: int,
        progress: Progress | None,
        report: Reencryption,
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._fields = fields
        self._retired = retired
        self._batch_size = batch_size
        self._progress = progress
        self._report = report
        self._total = 0
        self._encryptors: dict[str, Encryptor] = {}  # owner -> its current DEK, once per run
        self._preloaded: set[str] = set()  # retired DEK ids the Keyring has unwrapped
        # owner -> why its current DEK cannot encrypt (its KEK is not configured here)
        self._unusable: dict[str, DecryptionError] = {}

    def run(self) -> None:
        engine = self._session.connection().engine
        self._session.commit()
        # Reads go through one connection of their own: the session would check a connection
        # out of the pool, and ping it, for every batch. On PostgreSQL each read is a single
        # SELECT, its own snapshot, so it runs without BEGIN and COMMIT round trips.
        read_only = READ_ONLY if engine.dialect.name != "postgresql" else _AUTOCOMMIT
        with (
            engine.connect().execution_options(**read_only) as reader,
            engine.connect() as write_connection,
            ThreadPoolExecutor(1, thread_name_prefix="dek-rotation-writer") as writer,
        ):
            with reader.begin():
                self._total = sum(
                    reader.scalar(select(func.count()).where(f.column.is_not(None))) or 0
                    for f in self._fields
                )
            in_flight: Future[_Batch] | None = None
            for table in _EncryptedTable.all(self._fields, engine.dialect):
                for batch in self._batches(table, reader):
                    if in_flight is not None:
                        self._written(in_flight)
                    in_flight = writer.submit(self._write, write_connection, batch)
            if in_flight is not None:
                self._written(in_flight)

    def _batches(self, table: _EncryptedTable, reader: SqlConnection) -> Iterator[_Batch]:
        """``table``'s rows, batch by batch, with their ciphertexts under retired DEKs
        re-encrypted. No transaction stays open while a batch is handed over."""
        read = table.read.limit(self._batch_size)
        last: Any = None
        while True:
            with reader.begin():
                rows = reader.execute(read if last is None else read.where(table.key > last)).all()
            if not rows:
                return
            last = rows[-1][0]
            yield self._reencrypt_batch(table, rows)

    def _reencrypt_batch(self, table: _EncryptedTable, rows: Sequence[Any]) -> _Batch:
        # (row, slot, owner) of each ciphertext under a retired DEK
        stale: list[tuple[Any, int, str]] = []
        stale_key_ids: set[str] = set()
        examined = 0
        for row in rows:
            for index, slot in enumerate(table.slots):
                ciphertext = row[slot.ciphertext_at]
                if ciphertext is None:
                    continue
                examined += 1
                key_id = self._stale_key_id(slot.field, row[0], ciphertext)
                if key_id is not None:
                    stale.append((row, index, slot.owner_for(row[slot.owner_at])))
                    stale_key_ids.add(key_id)
        self._ensure_encryptors({owner for *_, owner in stale})
        self._preload(stale_key_ids)
        # key -> (old ciphertexts, new ciphertexts), in row order
        changed: dict[Any, tuple[list[bytes | None], list[bytes | None]]] = {}
        reencrypted = 0
        for row, index, owner in stale:
            slot = table.slots[index]
            context = f"{slot.context_head}{row[0]}{slot.context_tail}"
            new = self._reencrypt(slot.field, row[0], owner, row[slot.ciphertext_at], context)
            if new is None:
                continue
            if row[0] not in changed:
                old = [row[s.ciphertext_at] for s in table.slots]
                changed[row[0]] = (old, list(old))
            changed[row[0]][1][index] = new
            reencrypted += 1
        if self._session.in_transaction():
            self._session.commit()
        return _Batch(
            table,
            list(changed),
            [old for old, _ in changed.values()],
            [new for _, new in changed.values()],
            examined,
            reencrypted,
        )

    def _stale_key_id(
        self, encrypted: EncryptedField, row_key: object, ciphertext: bytes
    ) -> str | None:
        """The id of the retired DEK that ``ciphertext`` is under, or ``None`` when it is not
        under one. A malformed header is recorded as a failure."""
        try:
            key_id = aead.key_id_of(ciphertext)
        except DecryptionError as exc:
            self._fail(encrypted, row_key, exc)
            return None
        return key_id if key_id in self._retired else None

    def _ensure_encryptors(self, owners: set[str]) -> None:
        """Look up (or create) the current DEK of each owner not met yet, in one unit of work
        committed before any ciphertext under a new DEK can be: the writer's connection must
        find the DEK its ciphertexts name."""
        missing = owners - self._encryptors.keys()
        if not missing:
            return
        try:
            found = self._keyring.encryptors(missing)
        except DecryptionError:
            # A current DEK that the configured KEKs cannot unwrap: that owner's ciphertexts
            # are reported as failures, and the other owners' go on.
            self._session.rollback()
            found = {}
            for owner in sorted(missing):
                try:
                    found |= self._keyring.encryptors([owner])
                    self._session.commit()
                except DecryptionError as exc:
                    self._session.rollback()
                    self._unusable[owner] = exc
        self._session.commit()
        self._encryptors |= found
        self._report.new_data_keys += sum(encryptor.new for encryptor in found.values())

    def _preload(self, key_ids: set[str]) -> None:
        """Unwrap the retired DEKs met for the first time, in one read-only query."""
        unseen = key_ids - self._preloaded
        if not unseen:
            return
        self._preloaded |= unseen
        # The Keyring only reads here, and the batch's decryptions may read too: one read-only
        # transaction, ended when the batch is ready.
        self._session.connection(execution_options=READ_ONLY)
        with contextlib.suppress(DecryptionError):  # decrypt() raises it again, per ciphertext
            self._keyring.preload(unseen)

    def _reencrypt(
        self,
        encrypted: EncryptedField,
        row_key: object,
        owner: str,
        ciphertext: bytes,
        context: str,
    ) -> bytes | None:
        """``ciphertext`` decrypted and encrypted again for ``context`` under ``owner``'s
        current DEK, or ``None`` when that fails (recorded as a failure)."""
        try:
            plaintext = self._keyring.decrypt(ciphertext, context)
            encryptor = self._encryptors.get(owner)
            if encryptor is None:
                raise self._unusable[owner]
        except DecryptionError as exc:
            self._fail(encrypted, row_key, exc)
            return None
        return encryptor.encrypt(plaintext, context)

    def _fail(self, encrypted: EncryptedField, row_key: object, exc: DecryptionError) -> None:
        self._report.failures.append(
            ReencryptionFailure(encrypted.name, str(row_key), exc.code, str(exc))
        )

    def _write(self, connection: SqlConnection, batch: _Batch) -> _Batch:
        """Apply ``batch`` in one transaction of ``connection`` (on the writer thread), keeping
        in it only the rows that were written."""
        if batch.keys:
            table = batch.table
            with connection.begin():
                if table.writer.update(connection, batch) < len(batch.keys):
                    # Some rows changed after they were read. Find out which were written.
                    stored = table.stored(connection, batch.keys)
                    kept = [
                        i for i, key in enumerate(batch.keys) if stored.get(key) == batch.new[i]
                    ]
                    batch.reencrypted = sum(
                        old != new
                        for i in kept
                        for old, new in zip(batch.old[i], batch.new[i], strict=True)
                    )
                    batch.keys = [batch.keys[i] for i in kept]
                    batch.changed_concurrently = len(batch.old) - len(kept)
        return batch

    def _written(self, write: Future[_Batch]) -> None:
        """Wait for ``write`` (re-raising its error), count it and report progress."""
        batch = write.result()
        self._report.ciphertexts += batch.examined
        self._report.reencrypted += batch.reencrypted
        self._report.changed_concurrently += batch.changed_concurrently
        if self._progress is not None:
            done = self._report.ciphertexts
            self._progress(done, max(self._total, done))


class _EncryptedTable:
    """The encrypted fields of one table, re-encrypted together: one read per batch and one
    write per batch (see :attr:`writer`)."""

    def __init__(self, fields: tuple[EncryptedField, ...], dialect: Dialect) -> None:
        mapper = inspect(fields[0].column.class_)
        self.table = mapper.local_table
        self.key: Column[Any] = mapper.primary_key[0]
        self.fields = fields
        self.slots: list[_Slot] = []
        columns: list[Any] = [self.key]
        for encrypted in fields:
            self.slots.append(_Slot.of(encrypted, len(columns)))
            owner = encrypted.owner_column if encrypted.owner_column is not None else self.key
            columns += [owner, encrypted.column]
        self.read = (
            select(*columns)
            .where(or_(*(encrypted.column.is_not(None) for encrypted in fields)))
            .order_by(self.key)
        )
        self.writer: _Writer = (
            _ArrayUpdate(self, dialect)
            if (dialect.name, dialect.driver) == ("postgresql", "psycopg")
            else _RowUpdates(self, dialect)
        )

    @classmethod
    def all(cls, fields: Collection[EncryptedField], dialect: Dialect) -> list[_EncryptedTable]:
        """One per table of ``fields``, in the order the tables first appear."""
        by_table: dict[Any, list[EncryptedField]] = {}
        for encrypted in fields:
            by_table.setdefault(encrypted.column.class_, []).append(encrypted)
        return [cls(tuple(group), dialect) for group in by_table.values()]

    def stored(self, connection: SqlConnection, keys: list[Any]) -> dict[Any, list[Any]]:
        """The ciphertexts now stored in the rows with these primary keys."""
        columns = [encrypted.column for encrypted in self.fields]
        statement = select(self.key, *columns).where(self.key.in_(keys))
        return {row[0]: list(row[1:]) for row in connection.execute(statement)}


class _Writer(Protocol):
    """Writes a batch: each row only if all its ciphertexts are still the ones read, so a
    concurrent refresh always wins. Columns with an ``onupdate`` default (``updated_at``)
    keep their value: re-encryption changes no data."""

    def update(self, connection: SqlConnection, batch: _Batch) -> int:
        """Apply ``batch``; returns how many rows still held the old ciphertexts and were
        updated."""


class _RowUpdates:
    """One ``UPDATE <table> SET <field> = ?, ... WHERE <key> = ? AND <field> IS NOT DISTINCT
    FROM ? AND ...`` per row. The SQL is compiled once and run through the driver's
    ``executemany``, because SQLAlchemy's per-row bind processing costs more than the update
    itself. On SQLite, in-process, this is the fastest way."""

    def __init__(self, table: _EncryptedTable, dialect: Dialect) -> None:
        slots = range(len(table.slots))
        statement = (
            update(table.table)
            .where(
                table.key == bindparam("b_key"),
                *(
                    slot.field.column.is_not_distinct_from(bindparam(f"old_{i}"))
                    for i, slot in enumerate(table.slots)
                ),
            )
            .values(
                {slot.field.column: bindparam(f"new_{i}") for i, slot in enumerate(table.slots)}
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

    def update(self, connection: SqlConnection, batch: _Batch) -> int:
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


class _ArrayUpdate:
    """One statement per batch on PostgreSQL with psycopg::

        UPDATE <table> AS target SET <field> = batch.new_0, ...
        FROM unnest(<keys>, <old_0>, <new_0>, ...) AS batch(key, old_0, new_0, ...)
        WHERE target.<key> = batch.key AND target.<key> BETWEEN <first> AND <last>
          AND target.<field> IS NOT DISTINCT FROM batch.old_0 AND ...

    The arrays travel in psycopg's binary format (``%b``), which costs a few microseconds per
    row; the text format escapes every byte of every ciphertext and costs ten times more. The
    key range lets the planner read only the batch's part of the primary-key index. Only
    ciphertext columns change, and none is indexed, so with free space in the page
    (``fillfactor``, migration 0007) PostgreSQL updates the rows in place (HOT) instead of
    adding an entry to every index of the table.
    """

    def __init__(self, table: _EncryptedTable, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        key = quote(table.key.name)
        columns = [quote(slot.field.column.property.columns[0].name) for slot in table.slots]
        types = [slot.field.column.type.compile(dialect) for slot in table.slots]
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

    def update(self, connection: SqlConnection, batch: _Batch) -> int:
        arrays: list[Any] = [batch.keys]
        for i in range(len(batch.old[0])):
            arrays += [[old[i] for old in batch.old], [new[i] for new in batch.new]]
        parameters = (*arrays, batch.keys[0], batch.keys[-1])
        return connection.exec_driver_sql(self._sql, parameters).rowcount
