"""Encrypted backups: a consistent snapshot written as typed JSON lines, compressed and
encrypted in authenticated chunks (:mod:`.container`), verified and restored (docs/backup.md).

- :mod:`.container`: the file format (header, AES-256-GCM chunks); pure, no database.
- :mod:`.rows`: the typed encoding of column values as JSON.
- :mod:`.backup_keys`: the backup key (``ECHO_BACKUP_KEY`` or ``ECHO_BACKUP_KMS_KEY_ID``).
- :mod:`.snapshot`: reads every table from one consistent snapshot of the database.
- :mod:`.create`: ``backup create`` and ``backup keys``.
- :mod:`.restore`: ``backup restore`` (also the scratch restore of ``backup verify``).
- :mod:`.verify`: ``backup verify``.

The data keys (``data_keys``) are never in a data backup: a restore takes them from a key
source, so a key destroyed for an erasure stays destroyed in every backup.
"""
