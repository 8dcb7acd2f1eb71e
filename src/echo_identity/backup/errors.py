"""Backup errors, each with a stable machine code and a message saying how to fix it::

EchoError
└── BackupError                  backup_error
    ├── NotABackupError          not_a_backup: the file is not an Echo backup
    ├── BackupCorruptError       backup_corrupt: a byte was altered (names the chunk)
    ├── BackupTruncatedError     backup_truncated: the file ends before its last chunk
    ├── BackupKeyError           backup_key_error: no backup key configured, or not this one
    ├── UnknownRevisionError     backup_schema_unknown: a schema this code does not know
    ├── TargetNotEmptyError      restore_target_not_empty
    ├── KeySourceError           key_source_unavailable: the data keys cannot be read
    └── VerificationError        backup_verification_failed: audit chain or vault probe
"""

from __future__ import annotations

from echo_identity.errors import EchoError


class BackupError(EchoError):
    code = "backup_error"
    status = 400
    description = "The backup could not be processed."


class NotABackupError(BackupError):
    code = "not_a_backup"
    description = "The file is not an Echo Identity backup (wrong magic bytes or format)."


class BackupCorruptError(BackupError):
    """A chunk or the header failed authentication, or decoded to something malformed."""

    code = "backup_corrupt"


class BackupTruncatedError(BackupError):
    code = "backup_truncated"
    description = (
        "the backup file ends before its final chunk (copied incompletely?); "
        "use a complete copy of the file"
    )


class BackupKeyError(BackupError):
    code = "backup_key_error"


class UnknownRevisionError(BackupError):
    code = "backup_schema_unknown"


class TargetNotEmptyError(BackupError):
    code = "restore_target_not_empty"


class KeySourceError(BackupError):
    code = "key_source_unavailable"


class VerificationError(BackupError):
    code = "backup_verification_failed"
