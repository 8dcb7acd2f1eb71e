"""The backup key: ``ECHO_BACKUP_KEY`` (a local 32-byte key) or ``ECHO_BACKUP_KMS_KEY_ID`` (an
AWS KMS key), never a vault KEK (``config`` refuses that at load).

Either one is a :class:`~echo_identity.crypto.kek.KekProvider` that wraps each backup's random
content key, exactly as the vault's KEK wraps data keys; its id (``local:<16 hex>``, a
fingerprint, or ``kms:<key id>``) is written in the backup's header. With both set, KMS wraps
new backups and the local key still opens older ones.
"""

from __future__ import annotations

from echo_identity.backup.errors import BackupKeyError
from echo_identity.config import Settings, parse_keks
from echo_identity.crypto.kek import KekProvider, LocalKekProvider
from echo_identity.keys.kek_providers import CombinedKekProvider, kms_provider

NO_BACKUP_KEY_HINT = (
    "set ECHO_BACKUP_KEY (generate one with: python3 -c 'import base64, os; "
    "print(base64.urlsafe_b64encode(os.urandom(32)).decode())') or ECHO_BACKUP_KMS_KEY_ID"
)


def backup_key_provider(settings: Settings) -> KekProvider:
    """The provider of the configured backup key(s).

    Raises:
        BackupKeyError: no backup key is configured.
        ConfigError: ``ECHO_BACKUP_KMS_KEY_ID`` is unusable, no AWS region is known, or boto3
            is not installed.
    """
    local = (
        LocalKekProvider(parse_keks(settings.backup_key.get_secret_value()))
        if settings.backup_key is not None
        else None
    )
    if settings.backup_kms_key_id is None:
        if local is None:
            raise BackupKeyError(f"no backup key is configured; {NO_BACKUP_KEY_HINT}")
        return local
    kms = kms_provider(
        settings.backup_kms_key_id, settings.kms_region, variable="ECHO_BACKUP_KMS_KEY_ID"
    )
    return kms if local is None else CombinedKekProvider(kms, [local])
