"""Phase 2 of DEK rotation: re-encrypt every ciphertext under a retired DEK with its owner's
current DEK, table by table, in batches in primary-key order.

Each batch is read in a short read-only transaction, re-encrypted in memory, and written in
one transaction of its own. A write is conditional on the row's ciphertexts being unchanged
since the read, so a token that a concurrent refresh has just written is never replaced with
stale data. No transaction stays open between batches: readers and writers of the service
never wait long on the rotation, and PostgreSQL can prune each batch's old row versions.

How a batch is written depends on the database: on PostgreSQL with psycopg one ``UPDATE …
FROM unnest(arrays)`` per batch, elsewhere one precompiled ``UPDATE`` per row through the
driver's ``executemany``; those statements live in :mod:`echo_identity.keys.encrypted_tables`.
The rotation itself (phases 1 and 3) lives in :mod:`echo_identity.keys.rotation`; which columns
are encrypted, each domain declares (:class:`~echo_identity.keys.columns.EncryptedColumn`).

Errors: :func:`reencrypt` raises nothing for a single unreadable ciphertext; it reports the
row in :attr:`Reencryption.failures` and leaves it as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection as SqlConnection
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError
from echo_identity.db import READ_ONLY
from echo_identity.keys.columns import EncryptedColumn
from echo_identity.keys.encrypted_tables import Batch, EncryptedTable
from echo_identity.keys.keyring import Encryptor, Keyring

# A transaction that only reads. On SQLite it must not take the write lock (see db.py).
_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}

Progress = Callable[[int, int], None]
"""Called with (ciphertexts examined, ciphertexts in total) after each committed batch."""


@dataclass(frozen=True)
class ReencryptionFailure:
    """A ciphertext that phase 2 could not re-encrypt. Its DEK is kept. ``field`` names its
    column (``table.column``), ``row`` its primary key."""

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
    columns: Collection[EncryptedColumn],
    retired: set[str],
    *,
    batch_size: int,
    progress: Progress | None = None,
    report: Reencryption | None = None,
) -> Reencryption:
    """Re-encrypt every ciphertext of ``columns`` whose header names a DEK in ``retired`` under
    its owner's current DEK (created, and committed, when the owner has none). Counts go to
    ``report`` (a new one by default), which is returned.

    ``session`` is used only through ``keyring`` and is committed after each batch; the rows
    are read and written on two connections of their own. An exception raised by
    ``progress`` stops the run after a committed batch.
    """
    report = report if report is not None else Reencryption()
    _Run(session, keyring, columns, retired, batch_size, progress, report).run()
    return report


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
        columns: Collection[EncryptedColumn],
        retired: set[str],
        batch_size: int,
        progress: Progress | None,
        report: Reencryption,
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._columns = columns
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
                    for f in self._columns
                )
            in_flight: Future[Batch] | None = None
            for table in EncryptedTable.all(self._columns, engine.dialect):
                for batch in self._batches(table, reader):
                    if in_flight is not None:
                        self._written(in_flight)
                    in_flight = writer.submit(self._write, write_connection, batch)
            if in_flight is not None:
                self._written(in_flight)

    def _batches(self, table: EncryptedTable, reader: SqlConnection) -> Iterator[Batch]:
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

    def _reencrypt_batch(self, table: EncryptedTable, rows: Sequence[Any]) -> Batch:
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
                key_id = self._stale_key_id(slot.encrypted, row[0], ciphertext)
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
            new = self._reencrypt(slot.encrypted, row[0], owner, row[slot.ciphertext_at], context)
            if new is None:
                continue
            if row[0] not in changed:
                old = [row[s.ciphertext_at] for s in table.slots]
                changed[row[0]] = (old, list(old))
            changed[row[0]][1][index] = new
            reencrypted += 1
        if self._session.in_transaction():
            self._session.commit()
        return Batch(
            table,
            list(changed),
            [old for old, _ in changed.values()],
            [new for _, new in changed.values()],
            examined,
            reencrypted,
        )

    def _stale_key_id(
        self, encrypted: EncryptedColumn, row_key: object, ciphertext: bytes
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
        encrypted: EncryptedColumn,
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

    def _fail(self, encrypted: EncryptedColumn, row_key: object, exc: DecryptionError) -> None:
        self._report.failures.append(
            ReencryptionFailure(encrypted.name, str(row_key), exc.code, str(exc))
        )

    def _write(self, connection: SqlConnection, batch: Batch) -> Batch:
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

    def _written(self, write: Future[Batch]) -> None:
        """Wait for ``write`` (re-raising its error), count it and report progress."""
        batch = write.result()
        self._report.ciphertexts += batch.examined
        self._report.reencrypted += batch.reencrypted
        self._report.changed_concurrently += batch.changed_concurrently
        if self._progress is not None:
            done = self._report.ciphertexts
            self._progress(done, max(self._total, done))
