"""Online rotation of the envelope keys behind every secret stored encrypted.

Two rotations; the service keeps reading and writing secrets during both:

- KEK rotation (:func:`rotate_kek`) re-wraps the DEKs under the primary KEK. No ciphertext
  changes, so it is quick.
- DEK rotation (:func:`rotate_deks`) moves every ciphertext to a new DEK of its owner, in three
  phases:

  1. retire every current DEK, in one statement. New ciphertexts then go to a new DEK, which
     the Keyring (or phase 2) creates on the owner's next encryption. The phase is skipped when
     an earlier run was interrupted (some ciphertext is still under a retired DEK), so a rerun
     finishes that rotation instead of starting another.
  2. re-encrypt every ciphertext whose header names a retired DEK under its owner's new DEK, in
     batches of one short transaction each. An update is conditional on the row's ciphertexts
     being unchanged, so a token that a concurrent refresh has just written is never replaced
     with stale data.
  3. delete the retired DEKs that no ciphertext references any more. After that an old DEK,
     even one unwrapped from a backup with the old KEK, opens no stored secret.

  Retired DEKs keep decrypting until phase 3, and phase 3 removes only unreferenced ones, so
  reads never fail because of a rotation.

:data:`ENCRYPTED_FIELDS` lists every column that holds ciphertexts. A new encrypted column must
be added there, because phase 3 deletes the DEKs that no listed column references.

Errors: :func:`rotate_kek` raises :class:`~echo_identity.crypto.aead.DecryptionError` (or its
:class:`~echo_identity.crypto.kek.UnknownKekError`) for a DEK it cannot unwrap.
:func:`rotate_deks` raises nothing for a single unreadable ciphertext. It reports the row in
:attr:`DekRotation.failures` and keeps the DEK that row needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection as SqlConnection
from sqlalchemy import (
    Dialect,
    LargeBinary,
    bindparam,
    delete,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError
from echo_identity.db import utcnow
from echo_identity.idp.keys import SYSTEM_OWNER
from echo_identity.idp.models import SigningKey
from echo_identity.vault.keyring import Keyring
from echo_identity.vault.models import Connection, DataKey, Provider

DEFAULT_BATCH_SIZE = 1000
_DELETE_CHUNK = 500
_SETTLE_TIMEOUT = 60.0  # seconds phase 3 waits for transactions older than phase 1
_SETTLE_POLL = 0.05
_OLDER_TRANSACTIONS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND xact_start < :since"
)
# A transaction that only reads. On SQLite it must not take the write lock (see db.py).
_READ_ONLY = {"sqlite_begin": "DEFERRED"}

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


ENCRYPTED_FIELDS: tuple[EncryptedField, ...] = (
    EncryptedField(
        Connection.access_token_ciphertext,
        "connection:{row}:access_token",
        "user:{owner}",
        Connection.user_id,
    ),
    EncryptedField(
        Connection.refresh_token_ciphertext,
        "connection:{row}:refresh_token",
        "user:{owner}",
        Connection.user_id,
    ),
    EncryptedField(Provider.client_secret_ciphertext, "provider:{row}:client_secret", SYSTEM_OWNER),
    EncryptedField(
        SigningKey.private_key_ciphertext, "signing_key:{row}:private_key", SYSTEM_OWNER
    ),
)


@dataclass(frozen=True)
class ReencryptionFailure:
    """A ciphertext that phase 2 could not re-encrypt. Its DEK is kept."""

    field: str
    row: str
    code: str
    message: str


@dataclass
class DekRotation:
    """What :func:`rotate_deks` did. ``changed_concurrently`` counts rows that a concurrent
    writer changed between the read and the update; they keep the writer's value.
    ``deletion_deferred`` means phase 3 did not run, because a transaction older than phase 1
    stayed open too long."""

    resumed: bool = False
    retired_data_keys: int = 0
    new_data_keys: int = 0
    ciphertexts: int = 0
    reencrypted: int = 0
    changed_concurrently: int = 0
    deleted_data_keys: int = 0
    deletion_deferred: bool = False
    failures: list[ReencryptionFailure] = field(default_factory=list)


def rotate_kek(session: Session, keyring: Keyring) -> int:
    """Re-wrap every DEK that is not under the primary KEK with the primary KEK, and commit.
    Returns how many were re-wrapped (0 when none needed it).

    ``keyring`` must hold the old KEKs as well as the new primary one. Keyring.rewrap_all
    flushes in batches, and this function commits once at the end. A failed run rolls back,
    and a rerun re-wraps only the DEKs still under an old KEK.

    Raises:
        UnknownKekError: a DEK is wrapped by a KEK that ``keyring`` does not hold.
        DecryptionError: a wrapped DEK was altered.
    """
    try:
        count = keyring.rewrap_all()
    except BaseException:
        session.rollback()
        raise
    session.commit()
    return count


def rotate_deks(
    session: Session,
    keyring: Keyring,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> DekRotation:
    """Move every ciphertext in :data:`ENCRYPTED_FIELDS` to a new DEK of its owner, then
    delete the retired DEKs that nothing references any more. Each phase and each batch
    commits on its own. If an earlier run was interrupted, this run finishes it instead of
    starting a new rotation (``resumed`` in the result).

    An exception raised by ``progress`` stops the run after a committed batch. A later run
    resumes from there.

    Raises:
        ValueError: ``batch_size`` is less than 1.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    report = DekRotation()
    # One transaction, on SQLite holding the write lock from the start: deciding whether to
    # resume and retiring the DEKs cannot interleave with another run.
    retired = _retired_key_ids(session)
    report.resumed = bool(retired) and _references_any(session, retired)
    if not report.resumed:
        report.retired_data_keys = _retire_current(session)
        retired = _retired_key_ids(session)
    session.commit()
    # Any transaction older than this may hold a DEK looked up before phase 1.
    started = _transaction_clock(session)

    _Reencryption(session, keyring, retired, batch_size, progress, report).run()
    if _older_transactions_ended(session, started):
        report.deleted_data_keys = _delete_unreferenced(session, retired)
    else:
        report.deletion_deferred = True
    return report


def _referenced_key_ids(session: Session) -> set[str]:
    """The ids of the DEKs that the stored ciphertexts name in their headers."""
    return {key_id for field in ENCRYPTED_FIELDS for key_id in _key_ids(session, field)}


def _retired_key_ids(session: Session) -> set[str]:
    return set(session.scalars(select(DataKey.id).where(DataKey.retired_at.is_not(None))))


def _references_any(session: Session, key_ids: set[str]) -> bool:
    """True when a stored ciphertext names one of ``key_ids``."""
    return any(not key_ids.isdisjoint(_key_ids(session, field)) for field in ENCRYPTED_FIELDS)


def _key_ids(session: Session, field: EncryptedField) -> set[str]:
    """The distinct DEK ids that ``field``'s ciphertexts name.

    The database does the scan. It first finds the distinct key-id lengths (header byte 2),
    then the distinct ids of each length, so only a few short values come back, however many
    rows there are. The version byte is not checked: counting a malformed header as a
    reference can only keep a DEK, never delete one."""
    connection = session.connection()
    length_byte = func.substr(field.column, 2, 1, type_=LargeBinary)
    lengths = connection.execute(
        select(length_byte).where(field.column.is_not(None)).distinct()
    ).scalars()
    key_ids: set[str] = set()
    for length in list(lengths):
        if not length:  # an empty ciphertext has no header
            continue
        key_id = func.substr(field.column, 3, length[0], type_=LargeBinary)
        raw_ids = connection.execute(
            select(key_id).where(field.column.is_not(None), length_byte == length).distinct()
        ).scalars()
        key_ids.update(raw.decode("ascii", errors="replace") for raw in raw_ids)
    return key_ids


def _retire_current(session: Session) -> int:
    """Phase 1: retire every current DEK (flushed, not committed); returns how many.

    Keyring.rotate retires and replaces one owner's DEK in three round trips. Retiring all of
    them in one statement keeps this transaction, and SQLite's write lock, to milliseconds.
    Phase 2 creates the new DEKs as it needs them."""
    return (
        session.connection()
        .execute(update(DataKey).where(DataKey.retired_at.is_(None)).values(retired_at=utcnow()))
        .rowcount
    )


def _transaction_clock(session: Session) -> datetime | None:
    """PostgreSQL's clock now, to compare with transaction start times; ``None`` elsewhere."""
    if session.connection().dialect.name != "postgresql":
        return None
    now: datetime = session.scalars(select(func.clock_timestamp())).one()
    session.commit()
    return now


def _older_transactions_ended(session: Session, since: datetime | None) -> bool:
    """Wait until no other transaction that began before ``since`` is still open; False if one
    still is after :data:`_SETTLE_TIMEOUT` seconds.

    Such a transaction may have looked up an owner's DEK before phase 1 retired it and may
    still write a ciphertext under it, which phase 3 must see before it deletes anything. On
    PostgreSQL, ``pg_stat_activity`` shows the transactions of the same role (all of them with
    ``pg_read_all_stats``). On SQLite (``since`` is ``None``) there is nothing to wait for: a
    writer holds the write lock from the start of its transaction, so no write can straddle
    phase 1."""
    if since is None:
        return True
    deadline = time.monotonic() + _SETTLE_TIMEOUT
    while True:
        still_open = session.scalar(_OLDER_TRANSACTIONS, {"since": since})
        session.commit()
        if not still_open:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_SETTLE_POLL)


def _delete_unreferenced(session: Session, retired: set[str]) -> int:
    """Phase 3: delete the DEKs of ``retired`` that no ciphertext names, and commit. Returns how
    many were deleted.

    Only DEKs retired before phase 2 began are candidates: a DEK retired since then may be
    needed by a write still in progress. On SQLite the scan and the delete share one
    transaction that holds the write lock, so no write can slip in between them."""
    unreferenced = sorted(retired - _referenced_key_ids(session))
    deleted = 0
    for start in range(0, len(unreferenced), _DELETE_CHUNK):
        chunk = unreferenced[start : start + _DELETE_CHUNK]
        result = session.connection().execute(
            delete(DataKey).where(DataKey.id.in_(chunk), DataKey.retired_at.is_not(None))
        )
        deleted += result.rowcount
    session.commit()
    return deleted


@dataclass
class _Batch:
    """One batch of rows after re-encryption, ready to write."""

    table: _EncryptedTable
    changes: list[dict[str, Any]]
    examined: int


class _Reencryption:
    """Phase 2: re-encrypt the ciphertexts under ``retired`` DEKs, table by table and in batches
    in primary-key order.

    This thread reads each batch in a short read-only transaction of its own connection and
    re-encrypts it, using the session only through the Keyring and to create new DEKs. A writer
    thread applies the batch in one transaction of a second connection. While the writer
    applies batch N, this thread prepares batch N+1, so the database works on the updates while
    the CPU works on the crypto. At most one batch is in flight, and progress is reported once
    the writer has committed a batch."""

    def __init__(
        self,
        session: Session,
        keyring: Keyring,
        retired: set[str],
        batch_size: int,
        progress: Progress | None,
        report: DekRotation,
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._retired = retired
        self._batch_size = batch_size
        self._progress = progress
        self._report = report
        self._total = 0
        self._current: dict[str, DataKey] = {}
        # owner -> (DEK id, DEK): the owner's current DEK, unwrapped once per run.
        self._encryption_keys: dict[str, tuple[str, bytes]] = {}
        self._seen: set[str] = set()  # retired DEK ids met so far (the Keyring caches them)

    def run(self) -> None:
        engine = self._session.connection().engine
        self._session.commit()
        # Reads go through one connection of their own: the session would check a connection
        # out of the pool, and ping it, for every batch.
        with (
            engine.connect().execution_options(**_READ_ONLY) as reader,
            engine.connect() as write_connection,
            ThreadPoolExecutor(1, thread_name_prefix="dek-rotation-writer") as writer,
        ):
            with reader.begin():
                self._total = sum(
                    reader.scalar(select(func.count()).where(f.column.is_not(None))) or 0
                    for f in ENCRYPTED_FIELDS
                )
            in_flight: Future[int] | None = None
            for table in _EncryptedTable.all(engine.dialect):
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
            # (row's change, slot, owner) of each ciphertext under a retired DEK
            stale: list[tuple[dict[str, Any], _Slot, str]] = []
            unseen_deks = False
            examined = 0
            for row in rows:
                change = {"b_key": row[0]}
                for slot in table.slots:
                    ciphertext = change[slot.old] = change[slot.new] = row[slot.ciphertext_at]
                    if ciphertext is None:
                        continue
                    examined += 1
                    key_id = self._stale_key_id(slot.field, row[0], ciphertext)
                    if key_id is not None:
                        stale.append((change, slot, slot.field.owner_for(row[slot.owner_at])))
                        unseen_deks = unseen_deks or key_id not in self._seen
                        self._seen.add(key_id)
            self._ensure_current({owner for *_, owner in stale})
            if unseen_deks:
                # The Keyring will read these DEKs through the session: only read.
                self._session.connection(execution_options=_READ_ONLY)
            changes: dict[Any, dict[str, Any]] = {}  # by primary key, in row order
            for change, slot, owner in stale:
                new = self._reencrypt(slot.field, change["b_key"], owner, change[slot.old])
                if new is not None:
                    change[slot.new] = new
                    changes[change["b_key"]] = change
            self._session.commit()
            yield _Batch(table, list(changes.values()), examined)

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

    def _reencrypt(
        self, encrypted: EncryptedField, row_key: object, owner: str, ciphertext: bytes
    ) -> bytes | None:
        """``ciphertext`` decrypted and encrypted again under ``owner``'s current DEK, or
        ``None`` when it cannot be decrypted (recorded as a failure)."""
        context = encrypted.context_for(row_key)
        try:
            plaintext = self._keyring.decrypt(ciphertext, context)
            key_id, dek = self._encryption_key(owner)
        except DecryptionError as exc:
            self._fail(encrypted, row_key, exc)
            return None
        return aead.encrypt(dek, key_id, plaintext, context)

    def _fail(self, encrypted: EncryptedField, row_key: object, exc: DecryptionError) -> None:
        self._report.failures.append(
            ReencryptionFailure(encrypted.name, str(row_key), exc.code, str(exc))
        )

    def _encryption_key(self, owner: str) -> tuple[str, bytes]:
        """The id and unwrapped bytes of ``owner``'s current DEK (see :meth:`_ensure_current`).

        Keyring.encrypt looks the current DEK up on every call, which costs about 40 times the
        AES work, so rotation looks it up once per owner and encrypts with :mod:`aead`.

        Raises:
            DecryptionError: the current DEK cannot be unwrapped (its KEK is not configured).
        """
        cached = self._encryption_keys.get(owner)
        if cached is None:
            data_key = self._current[owner]
            cached = (data_key.id, self._keyring._dek(data_key))
            self._encryption_keys[owner] = cached
        return cached

    def _ensure_current(self, owners: set[str]) -> None:
        """Give each of ``owners`` a current DEK: the one it has (a concurrent encryption, or an
        interrupted run, may have created it), or a new one. New DEKs are committed before
        any ciphertext under them can be."""
        missing = owners - self._current.keys()
        if not missing:
            return
        for attempt in range(2):
            for data_key in self._session.scalars(
                select(DataKey)
                .where(DataKey.owner.in_(missing), DataKey.retired_at.is_(None))
                .order_by(DataKey.created_at, DataKey.id)  # the newest wins, as in Keyring
            ):
                self._current[data_key.owner] = data_key
            try:
                created = {
                    o: self._keyring.rotate(o) for o in sorted(missing - self._current.keys())
                }
                self._session.commit()
            except IntegrityError:
                # A concurrent encryption created one of them first: use the winner's DEK.
                self._session.rollback()
                if attempt:
                    raise
                continue
            self._current.update(created)
            self._report.new_data_keys += len(created)
            break

    def _write(self, connection: SqlConnection, batch: _Batch) -> int:
        """Apply ``batch`` in one transaction of ``connection`` (on the writer thread) and count
        what was written. Returns how many ciphertexts the batch examined."""
        table, changes = batch.table, batch.changes
        if changes:
            with connection.begin():
                if table.update(connection, changes) < len(changes):
                    # Some rows changed after they were read. Find out which were written.
                    stored = table.stored(connection, [change["b_key"] for change in changes])
                    changes = [c for c in changes if stored.get(c["b_key"]) == table.new(c)]
        self._report.changed_concurrently += len(batch.changes) - len(changes)
        self._report.reencrypted += sum(
            change[slot.new] != change[slot.old] for change in changes for slot in table.slots
        )
        return batch.examined

    def _written(self, write: Future[int]) -> None:
        """Wait for ``write`` (re-raising its error) and report progress."""
        self._report.ciphertexts += write.result()
        if self._progress is not None:
            done = self._report.ciphertexts
            self._progress(done, max(self._total, done))


class _Slot(NamedTuple):
    """Where one encrypted field sits in a table's batch: the names of its old and new
    ciphertext parameters, and the positions of its owner and ciphertext in a read row."""

    field: EncryptedField
    old: str
    new: str
    owner_at: int
    ciphertext_at: int


class _EncryptedTable:
    """The encrypted fields of one table, re-encrypted together: one read per batch and one
    conditional update per row.

    The update is ``UPDATE <table> SET <field> = :new_<i>, ... WHERE <key> = :b_key AND
    <field> IS NOT DISTINCT FROM :old_<i> AND ...``. It writes a row only if none of its
    ciphertexts changed since the read, so a concurrent refresh always wins. The SQL is
    compiled once and run through the driver's executemany, because SQLAlchemy's per-row bind
    processing costs more than the update itself. Columns with an ``onupdate`` default
    (``updated_at``) keep their value: re-encryption changes no data.
    """

    def __init__(self, fields: tuple[EncryptedField, ...], dialect: Dialect) -> None:
        mapper = inspect(fields[0].column.class_)
        table = mapper.local_table
        self.key: Any = mapper.primary_key[0]
        self.fields = fields
        self.slots: list[_Slot] = []
        columns = [self.key]
        for i, encrypted in enumerate(fields):
            self.slots.append(
                _Slot(encrypted, f"old_{i}", f"new_{i}", len(columns), len(columns) + 1)
            )
            owner = encrypted.owner_column if encrypted.owner_column is not None else self.key
            columns += [owner, encrypted.column]
        self.read = (
            select(*columns)
            .where(or_(*(encrypted.column.is_not(None) for encrypted in fields)))
            .order_by(self.key)
        )
        statement = (
            update(table)
            .where(
                self.key == bindparam("b_key"),
                *(
                    slot.field.column.is_not_distinct_from(bindparam(slot.old))
                    for slot in self.slots
                ),
            )
            .values(
                {slot.field.column: bindparam(slot.new) for slot in self.slots}
                | {column: column for column in table.columns if column.onupdate is not None}
            )
        )
        compiled = statement.compile(dialect=dialect)
        self._sql = str(compiled)
        self._positions = compiled.positiontup if compiled.positional else None

    @classmethod
    def all(cls, dialect: Dialect) -> list[_EncryptedTable]:
        """One per table of :data:`ENCRYPTED_FIELDS`, in the order the tables first appear."""
        by_table: dict[Any, list[EncryptedField]] = {}
        for encrypted in ENCRYPTED_FIELDS:
            by_table.setdefault(encrypted.column.class_, []).append(encrypted)
        return [cls(tuple(fields), dialect) for fields in by_table.values()]

    def update(self, connection: SqlConnection, changes: list[dict[str, Any]]) -> int:
        """Apply ``changes`` (each with ``b_key``, ``old_<i>`` and ``new_<i>``). Returns how many
        rows still held the old ciphertexts and were updated."""
        parameters: list[Any] = changes
        if self._positions is not None:
            parameters = [tuple(change[name] for name in self._positions) for change in changes]
        return connection.exec_driver_sql(self._sql, parameters).rowcount

    def stored(self, connection: SqlConnection, keys: list[Any]) -> dict[Any, tuple[Any, ...]]:
        """The ciphertexts now stored in the rows with these primary keys."""
        columns = [encrypted.column for encrypted in self.fields]
        statement = select(self.key, *columns).where(self.key.in_(keys))
        return {row[0]: tuple(row[1:]) for row in connection.execute(statement)}

    def new(self, change: dict[str, Any]) -> tuple[Any, ...]:
        """The ciphertexts that ``change`` writes."""
        return tuple(change[slot.new] for slot in self.slots)
