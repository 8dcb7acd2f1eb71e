"""``backup verify``: prove a backup restores, without touching any real database.

1. every chunk is decrypted and authenticated, and each table's row count matches the header;
2. the schema revision is one this code knows;
3. the backup is restored into a scratch SQLite database in a temporary directory, with the
   data keys of the key source;
4. the audit trail of the scratch copy verifies (hash chain and signed checkpoints);
5. one vault secret per data key decrypts (a probe of the data keys and the vault's KEK).

Steps 1-3 raise on failure; steps 4-5 are reported as checks (:class:`VerifyReport`). A
ciphertext whose data key is absent from the key source (destroyed for an erasure) is counted
as shredded, not as a failure: that is crypto-shredding working.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, inspect, select
from sqlalchemy.orm import Session

from echo_identity.audit.sealer import verify_trail
from echo_identity.backup.restore import KeySource, SchemaMigrator, restore_backup
from echo_identity.backup.snapshot import Progress
from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError
from echo_identity.crypto.kek import KekProvider
from echo_identity.db import Database
from echo_identity.keys.columns import EncryptedColumn
from echo_identity.keys.keyring import Keyring
from echo_identity.keys.models import DataKey


@dataclass(frozen=True)
class Check:
    """One named check of a verification: whether it passed and what it found."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    kind: str
    key_id: str
    schema_revision: str
    dialect: str
    created_at: str
    row_counts: dict[str, int]
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def first_failure(self) -> Check | None:
        return next((check for check in self.checks if not check.passed), None)


def verify_backup(
    path: Path,
    keys: KekProvider,
    metadata: MetaData,
    migrator: SchemaMigrator,
    key_source: KeySource,
    encrypted_columns: Sequence[EncryptedColumn],
    keyring_for: Callable[[Session], Keyring],
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify backup ``path`` (see the module docstring). ``keyring_for`` builds a keyring on
    the vault's KEK for a session of the scratch copy.

    Raises:
        NotABackupError, BackupTruncatedError, BackupCorruptError, BackupKeyError: the file
            is damaged or its key is not configured.
        UnknownRevisionError: the backup's schema revision is not one of this code's.
        KeySourceError: the data keys could not be read.
        BackupError: the scratch restore failed.
    """
    with tempfile.TemporaryDirectory(prefix="echo-backup-verify-") as scratch_dir:
        scratch = Database(f"sqlite:///{Path(scratch_dir) / 'scratch.db'}")
        try:
            restored = restore_backup(path, scratch, keys, metadata, migrator, key_source, progress)
            checks = [
                Check("integrity", True, "every chunk authenticated; row counts match"),
                Check("schema", True, f"revision {restored.schema_revision} is known"),
                _audit_check(scratch),
                _probe_check(scratch, encrypted_columns, keyring_for, restored.data_keys),
            ]
        finally:
            scratch.dispose()
    header = restored.header
    return VerifyReport(
        header.kind,
        header.key_id,
        header.schema_revision,
        str(header.fields.get("dialect", "")),
        str(header.fields.get("created_at", "")),
        restored.row_counts,
        checks,
    )


def _audit_check(scratch: Database) -> Check:
    status = verify_trail(scratch)
    report, problem = status.report, status.report.problem
    if problem is not None:
        return Check("audit_chain", False, f"audit trail broken: {problem.message}")
    return Check(
        "audit_chain",
        True,
        f"{report.sealed} sealed events, {status.unsealed} not yet sealed, "
        f"{report.checkpoints} signed checkpoints",
    )


def _probe_check(
    scratch: Database,
    encrypted_columns: Sequence[EncryptedColumn],
    keyring_for: Callable[[Session], Keyring],
    data_keys: int,
) -> Check:
    """Decrypt the first ciphertext found under each data key (all encrypted columns)."""
    with scratch.read_session() as session:
        present = set(session.scalars(select(DataKey.id)))
        probes: dict[str, tuple[bytes, str]] = {}
        shredded: set[str] = set()
        for declared in encrypted_columns:
            mapper = inspect(declared.column.class_)
            (primary,) = mapper.primary_key
            statement = select(primary, declared.column).where(declared.column.is_not(None))
            for row_id, ciphertext in session.execute(statement):
                value: Any = ciphertext
                if not value:
                    continue
                try:
                    key_id = aead.key_id_of(value)
                except DecryptionError:
                    return Check("vault_probe", False, f"{declared.name} row {row_id}: malformed")
                if key_id not in present:
                    shredded.add(key_id)
                elif key_id not in probes:
                    probes[key_id] = (value, declared.context_for(row_id))
        keyring = keyring_for(session)
        for key_id, (ciphertext, context) in sorted(probes.items()):
            try:
                keyring.decrypt(ciphertext, context)
            except DecryptionError as exc:
                return Check(
                    "vault_probe", False, f"data key {key_id} failed to decrypt {context}: {exc}"
                )
    return Check(
        "vault_probe",
        True,
        f"{len(probes)} data keys each decrypted a secret ({data_keys} restored from the key "
        f"source); {len(shredded)} data keys absent (destroyed: their secrets stay unreadable)",
    )
