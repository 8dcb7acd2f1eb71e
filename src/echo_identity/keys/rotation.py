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
     batches of one short transaction each (:mod:`echo_identity.keys.reencryption`). An
     update is conditional on the row's ciphertexts being unchanged, so a token that a
     concurrent refresh has just written is never replaced with stale data.
  3. delete the retired DEKs that no ciphertext references any more. After that an old DEK,
     even one unwrapped from a backup with the old KEK, opens no stored secret.

  Retired DEKs keep decrypting until phase 3, and phase 3 removes only unreferenced ones, so
  reads never fail because of a rotation.

:func:`rotate_deks` takes the list of every column that holds ciphertexts
(``schema.ENCRYPTED_COLUMNS``, assembled from each domain's declarations). A new encrypted
column must be declared and listed there, because phase 3 deletes the DEKs that no listed
column references.

Errors: :func:`rotate_kek` raises :class:`~echo_identity.crypto.aead.DecryptionError` (or its
:class:`~echo_identity.crypto.kek.UnknownKekError`) for a DEK it cannot unwrap.
:func:`rotate_deks` raises nothing for a single unreadable ciphertext. It reports the row in
:attr:`DekRotation.failures` and keeps the DEK that row needs.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import LargeBinary, delete, func, select, text, update
from sqlalchemy.orm import Session

from echo_identity.db import utcnow
from echo_identity.keys.columns import EncryptedColumn
from echo_identity.keys.keyring import Keyring
from echo_identity.keys.models import DataKey
from echo_identity.keys.reencryption import (
    Progress,
    Reencryption,
    ReencryptionFailure,
    reencrypt,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DekRotation",
    "Progress",
    "ReencryptionFailure",
    "rotate_deks",
    "rotate_kek",
]

DEFAULT_BATCH_SIZE = 1000
_DELETE_CHUNK = 500
_SETTLE_TIMEOUT = 60.0  # seconds phase 3 waits for transactions older than phase 1
_SETTLE_POLL = 0.05
_OLDER_TRANSACTIONS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND xact_start < :since"
)


@dataclass
class DekRotation(Reencryption):
    """What :func:`rotate_deks` did: phase 2's counts (see :class:`Reencryption`) and the
    phases around it. ``deletion_deferred`` means phase 3 did not run, because a transaction
    older than phase 1 stayed open too long."""

    resumed: bool = False
    retired_data_keys: int = 0
    deleted_data_keys: int = 0
    deletion_deferred: bool = False


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
    columns: Collection[EncryptedColumn],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> DekRotation:
    """Move every ciphertext in ``columns`` to a new DEK of its owner, then delete the retired
    DEKs that no ciphertext in ``columns`` references any more. Each phase and each batch
    commits on its own. If an earlier run was interrupted, this run finishes it instead of
    starting a new rotation (``resumed`` in the result).

    ``columns`` must list every column that holds ciphertexts (``schema.ENCRYPTED_COLUMNS``):
    a DEK that only an unlisted column used would be deleted, and its secrets lost with it.

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
    report.resumed = bool(retired) and _references_any(session, columns, retired)
    if not report.resumed:
        report.retired_data_keys = _retire_current(session)
        retired = _retired_key_ids(session)
    session.commit()
    # Any transaction older than this may hold a DEK looked up before phase 1.
    started = _transaction_clock(session)

    reencrypt(
        session,
        keyring,
        columns,
        retired,
        batch_size=batch_size,
        progress=progress,
        report=report,
    )
    if _older_transactions_ended(session, started):
        report.deleted_data_keys = _delete_unreferenced(session, columns, retired)
    else:
        report.deletion_deferred = True
    return report


def _referenced_key_ids(session: Session, columns: Collection[EncryptedColumn]) -> set[str]:
    """The ids of the DEKs that the ciphertexts stored in ``columns`` name in their headers."""
    return {key_id for encrypted in columns for key_id in _key_ids(session, encrypted)}


def _retired_key_ids(session: Session) -> set[str]:
    return set(session.scalars(select(DataKey.id).where(DataKey.retired_at.is_not(None))))


def _references_any(
    session: Session, columns: Collection[EncryptedColumn], key_ids: set[str]
) -> bool:
    """True when a ciphertext stored in ``columns`` names one of ``key_ids``."""
    return any(not key_ids.isdisjoint(_key_ids(session, encrypted)) for encrypted in columns)


def _key_ids(session: Session, encrypted: EncryptedColumn) -> set[str]:
    """The distinct DEK ids that ``encrypted``'s ciphertexts name.

    The database does the scan. It first finds the distinct key-id lengths (header byte 2),
    then the distinct ids of each length, so only a few short values come back, however many
    rows there are. The version byte is not checked: counting a malformed header as a
    reference can only keep a DEK, never delete one."""
    connection = session.connection()
    length_byte = func.substr(encrypted.column, 2, 1, type_=LargeBinary)
    lengths = connection.execute(
        select(length_byte).where(encrypted.column.is_not(None)).distinct()
    ).scalars()
    key_ids: set[str] = set()
    for length in list(lengths):
        if not length:  # an empty ciphertext has no header
            continue
        key_id = func.substr(encrypted.column, 3, length[0], type_=LargeBinary)
        raw_ids = connection.execute(
            select(key_id).where(encrypted.column.is_not(None), length_byte == length).distinct()
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


def _delete_unreferenced(
    session: Session, columns: Collection[EncryptedColumn], retired: set[str]
) -> int:
    """Phase 3: delete the DEKs of ``retired`` that no ciphertext in ``columns`` names, and
    commit. Returns how
    many were deleted.

    Only DEKs retired before phase 2 began are candidates: a DEK retired since then may be
    needed by a write still in progress. On SQLite the scan and the delete share one
    transaction that holds the write lock, so no write can slip in between them."""
    unreferenced = sorted(retired - _referenced_key_ids(session, columns))
    deleted = 0
    for start in range(0, len(unreferenced), _DELETE_CHUNK):
        chunk = unreferenced[start : start + _DELETE_CHUNK]
        result = session.connection().execute(
            delete(DataKey).where(DataKey.id.in_(chunk), DataKey.retired_at.is_not(None))
        )
        deleted += result.rowcount
    session.commit()
    return deleted
