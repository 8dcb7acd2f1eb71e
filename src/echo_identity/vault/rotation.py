"""Online rotation of the envelope keys behind every secret stored encrypted.

Two rotations; the service keeps reading and writing secrets during both:

- KEK rotation (:func:`rotate_kek`) re-wraps the DEKs under the primary KEK. No ciphertext
  changes, so it is quick.
- DEK rotation (:func:`rotate_deks`) gives every owner a new DEK and re-encrypts every
  ciphertext under it, in three phases:

  1. retire each owner's current DEK and create a new one, in one transaction. Skipped when an
     earlier run was interrupted (some ciphertext is still under a retired DEK): a rerun
     finishes that rotation rather than starting another.
  2. re-encrypt, in batches of one short transaction each, every ciphertext whose header names
     a retired DEK. Each update is conditional on the ciphertext being unchanged, so a token
     that a concurrent refresh has just written is never replaced with stale data.
  3. delete the retired DEKs that no ciphertext references any more. Afterwards an old DEK,
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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection as SqlConnection
from sqlalchemy import LargeBinary, bindparam, delete, func, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError
from echo_identity.idp.keys import SYSTEM_OWNER
from echo_identity.idp.models import SigningKey
from echo_identity.vault.keyring import Keyring
from echo_identity.vault.models import Connection, DataKey, Provider

DEFAULT_BATCH_SIZE = 1000
_DELETE_CHUNK = 500

Progress = Callable[[int, int], None]
"""Called with (ciphertexts examined, ciphertexts in total) after each committed batch."""


@dataclass(frozen=True)
class EncryptedField:
    """A column of envelope ciphertexts: whose DEK encrypts it and the context that binds each
    value to its row and field.

    ``context`` is formatted with ``row`` (the primary key). ``owner`` is formatted with
    ``owner`` (the value of ``owner_column``), or used as is when there is no owner column.
    """

    column: InstrumentedAttribute[Any]
    context: str
    owner: str
    owner_column: InstrumentedAttribute[Any] | None = None

    @property
    def name(self) -> str:
        """``table.column``, as in messages and reports."""
        return f"{inspect(self.column.class_).local_table.description}.{self.column.key}"

    @property
    def row_key(self) -> Any:
        """The primary-key column of the field's table."""
        return inspect(self.column.class_).primary_key[0]

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
    """What :func:`rotate_deks` did."""

    resumed: bool = False
    new_data_keys: int = 0
    ciphertexts: int = 0
    reencrypted: int = 0
    changed_concurrently: int = 0
    deleted_data_keys: int = 0
    failures: list[ReencryptionFailure] = field(default_factory=list)


def rotate_kek(session: Session, keyring: Keyring) -> int:
    """Re-wrap every DEK not yet under the primary KEK with the primary KEK, and commit.
    Returns how many were re-wrapped (0 when all already were).

    ``keyring`` must hold the old KEKs as well as the new primary one. The re-wrap flushes in
    batches and commits once at the end. A failed run rolls back, and a rerun re-wraps only
    the DEKs still under an old KEK.

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
    """Give every owner a new DEK, re-encrypt every ciphertext in :data:`ENCRYPTED_FIELDS`
    under it, and delete the retired DEKs nothing references any more. Each phase and batch
    commits on its own. If an earlier run was interrupted, this run resumes it instead of
    starting a new rotation (``resumed`` in the result).

    An exception raised by ``progress`` stops the run after a committed batch. A later run
    then resumes from there.

    Raises:
        ValueError: ``batch_size`` is less than 1.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    report = DekRotation()
    retired = _retired_key_ids(session)
    report.resumed = bool(retired) and _references_any(session, retired)
    if not report.resumed:
        report.new_data_keys = _retire_and_replace(session, keyring)
        retired = _retired_key_ids(session)
    session.commit()

    _Reencryption(session, keyring, retired, batch_size, progress, report).run()
    report.deleted_data_keys = _delete_unreferenced(session, retired)
    return report


def referenced_key_ids(session: Session) -> set[str]:
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
    then the distinct ids of each length, so only a few short values come back however many
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


def _retire_and_replace(session: Session, keyring: Keyring) -> int:
    """Phase 1: retire every owner's current DEK and create a new one (flushed, not committed).
    Returns the number of new DEKs."""
    owners = session.scalars(
        select(DataKey.owner).where(DataKey.retired_at.is_(None)).distinct()
    ).all()
    for owner in owners:
        keyring.rotate(owner)
    return len(owners)


def _delete_unreferenced(session: Session, retired: set[str]) -> int:
    """Phase 3: delete the DEKs of ``retired`` that no ciphertext names, and commit. Returns how
    many were deleted.

    Only DEKs that were retired before phase 2 began are candidates. A DEK retired later may
    still be needed by a write that is in progress."""
    unreferenced = sorted(retired - referenced_key_ids(session))
    deleted = 0
    for start in range(0, len(unreferenced), _DELETE_CHUNK):
        chunk = unreferenced[start : start + _DELETE_CHUNK]
        result = session.connection().execute(
            delete(DataKey).where(DataKey.id.in_(chunk), DataKey.retired_at.is_not(None))
        )
        deleted += result.rowcount
    session.commit()
    return deleted


class _Reencryption:
    """Phase 2: re-encrypt the ciphertexts under ``retired`` DEKs, field by field, in primary-key
    order and in batches. Each batch is read in one transaction and written in another with a
    conditional executemany, so no lock is held while the CPU does the crypto."""

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
        self._current: dict[str, DataKey] = {}
        # owner -> (DEK id, DEK): the current DEK, unwrapped once per owner per run.
        self._encryption_keys: dict[str, tuple[str, bytes]] = {}

    def run(self) -> None:
        total = sum(
            self._session.scalar(select(func.count()).where(f.column.is_not(None))) or 0
            for f in ENCRYPTED_FIELDS
        )
        # Ordered oldest first, so the newest current DEK of an owner wins (as in Keyring).
        for data_key in self._session.scalars(
            select(DataKey)
            .where(DataKey.retired_at.is_(None))
            .order_by(DataKey.created_at, DataKey.id)
        ):
            self._current[data_key.owner] = data_key
        self._session.commit()
        done = 0
        for encrypted in ENCRYPTED_FIELDS:
            for examined in self._field(encrypted):
                done += examined
                self._report.ciphertexts = done
                if self._progress is not None:
                    self._progress(done, max(total, done))

    def _field(self, encrypted: EncryptedField) -> Iterator[int]:
        """Re-encrypt ``encrypted`` batch by batch. Yields the number of ciphertexts examined
        after each batch is committed."""
        key = encrypted.row_key
        owner_column = encrypted.owner_column if encrypted.owner_column is not None else key
        read = (
            select(key, owner_column, encrypted.column)
            .where(encrypted.column.is_not(None))
            .order_by(key)
            .limit(self._batch_size)
        )
        write = _ConditionalUpdate(self._session.connection(), encrypted, key)
        last: Any = None
        while True:
            statement = read if last is None else read.where(key > last)
            rows = self._session.connection().execute(statement).all()
            self._session.commit()
            if not rows:
                return
            last = rows[-1][0]
            changes = [
                (row_key, ciphertext, new)
                for row_key, owner, ciphertext in rows
                if (new := self._reencrypt(encrypted, row_key, owner, ciphertext)) is not None
            ]
            if changes:
                written = write.execute(self._session.connection(), changes)
                self._session.commit()
                self._report.reencrypted += written
                self._report.changed_concurrently += len(changes) - written
            yield len(rows)

    def _reencrypt(
        self, encrypted: EncryptedField, row_key: object, owner: object, ciphertext: bytes
    ) -> bytes | None:
        """``ciphertext`` re-encrypted under its owner's current DEK. Returns ``None`` when it
        is not under a retired DEK, or when it cannot be decrypted (recorded as a failure)."""
        try:
            if aead.key_id_of(ciphertext) not in self._retired:
                return None
            context = encrypted.context_for(row_key)
            plaintext = self._keyring.decrypt(ciphertext, context)
            key_id, dek = self._encryption_key(encrypted.owner_for(owner))
            return aead.encrypt(dek, key_id, plaintext, context)
        except DecryptionError as exc:
            self._report.failures.append(
                ReencryptionFailure(encrypted.name, str(row_key), exc.code, str(exc))
            )
            return None

    def _encryption_key(self, owner: str) -> tuple[str, bytes]:
        """The id and unwrapped bytes of ``owner``'s current DEK, created (and committed) when
        the owner has none.

        Keyring.encrypt looks the current DEK up on every call, which costs about 40 times the
        AES work. Phase 1 already fixed each owner's current DEK, so it is looked up once.

        Raises:
            DecryptionError: the current DEK cannot be unwrapped (its KEK is not configured).
        """
        cached = self._encryption_keys.get(owner)
        if cached is None:
            data_key = self._current.get(owner) or self._create(owner)
            # The one place rotation needs the key bytes; Keyring keeps them cached.
            cached = (data_key.id, self._keyring._dek(data_key))
            self._encryption_keys[owner] = cached
        return cached

    def _create(self, owner: str) -> DataKey:
        """A first current DEK for an owner whose DEKs are all retired, committed so that no
        ciphertext under it can be committed without it. If a concurrent writer created one
        first, that one is used."""
        try:
            data_key = self._keyring.rotate(owner)
            self._session.commit()
        except IntegrityError:
            self._session.rollback()
            data_key = self._session.scalars(
                select(DataKey).where(DataKey.owner == owner, DataKey.retired_at.is_(None))
            ).one()
            self._session.commit()
        self._current[owner] = data_key
        return data_key


class _ConditionalUpdate:
    """``UPDATE <table> SET <field> = :new WHERE <key> = :key AND <field> = :old`` for a batch
    of rows, through the driver's executemany.

    The statement is compiled once; SQLAlchemy's per-row bind processing would cost more than
    the update itself. Columns with an ``onupdate`` default (``updated_at``) keep their value:
    re-encryption changes no data."""

    def __init__(self, connection: SqlConnection, encrypted: EncryptedField, key: Any) -> None:
        table = inspect(encrypted.column.class_).local_table
        statement = (
            update(table)
            .where(key == bindparam("b_key"), encrypted.column == bindparam("b_old"))
            .values(
                {encrypted.column: bindparam("b_new")}
                | {column: column for column in table.columns if column.onupdate is not None}
            )
        )
        compiled = statement.compile(dialect=connection.dialect)
        self._sql = str(compiled)
        self._positions = compiled.positiontup if compiled.positional else None

    def execute(self, connection: SqlConnection, changes: list[tuple[Any, bytes, bytes]]) -> int:
        """Apply ``(key, old ciphertext, new ciphertext)`` changes; returns how many rows still
        held the old ciphertext and were updated."""
        rows = [{"b_key": key, "b_old": old, "b_new": new} for key, old, new in changes]
        parameters: list[Any] = rows
        if self._positions is not None:
            parameters = [tuple(row[name] for name in self._positions) for row in rows]
        return connection.exec_driver_sql(self._sql, parameters).rowcount
