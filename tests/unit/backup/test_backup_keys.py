"""The backup key: its own key, never a vault KEK, named in backups by its fingerprint."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from echo_identity.backup.backup_keys import backup_key_provider
from echo_identity.backup.container import ContainerWriter, read_content
from echo_identity.backup.errors import BackupKeyError
from echo_identity.config import ConfigError, load_settings
from echo_identity.crypto.kek import local_kek_id
from tests.support.environment import app_environment, new_kek


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    return app_environment(tmp_path / "var", f"sqlite:///{tmp_path / 'db'}", **extra)


def test_the_backup_key_wraps_under_its_fingerprint(tmp_path: Path) -> None:
    key = new_kek()
    settings, _ = load_settings(environment(tmp_path, ECHO_BACKUP_KEY=key))
    provider = backup_key_provider(settings)

    key_id, wrapped = provider.wrap(bytes(32), "backup:1")

    assert key_id == provider.primary_id
    assert key_id.startswith("local:")
    assert key not in key_id
    assert provider.unwrap(key_id, wrapped, "backup:1") == bytes(32)


@pytest.mark.parametrize("position", [0, 1])
def test_a_backup_key_equal_to_any_vault_kek_is_refused_at_load(
    tmp_path: Path, position: int
) -> None:
    keks = [new_kek(), new_kek()]
    env = environment(tmp_path, ECHO_VAULT_KEK=",".join(keks), ECHO_BACKUP_KEY=keks[position])

    with pytest.raises(ConfigError) as refused:
        load_settings(env)

    assert refused.value.variable == "ECHO_BACKUP_KEY"
    assert keks[position] not in str(refused.value)


# Fixed values: xdist workers must collect the same test ids (a random key would differ).
TWO_KEYS = "A" * 43 + "=," + "B" * 43 + "="


@pytest.mark.parametrize("value", ["short", TWO_KEYS, "%%%"], ids=["short", "two", "not-base64"])
def test_a_garbled_backup_key_is_refused_naming_the_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environment(tmp_path, ECHO_BACKUP_KEY=value))

    assert refused.value.variable == "ECHO_BACKUP_KEY"


def test_the_vault_kms_key_cannot_be_the_backup_kms_key(tmp_path: Path) -> None:
    env = environment(tmp_path, ECHO_KMS_KEY_ID="alias/echo", ECHO_BACKUP_KMS_KEY_ID="alias/echo")

    with pytest.raises(ConfigError) as refused:
        load_settings(env)

    assert refused.value.variable == "ECHO_BACKUP_KMS_KEY_ID"


def test_without_a_backup_key_the_error_says_how_to_set_one(tmp_path: Path) -> None:
    settings, _ = load_settings(environment(tmp_path))

    with pytest.raises(BackupKeyError, match="ECHO_BACKUP_KEY"):
        backup_key_provider(settings)


def test_the_same_key_always_gets_the_same_id(tmp_path: Path) -> None:
    key = new_kek()
    first, _ = load_settings(environment(tmp_path, ECHO_BACKUP_KEY=key))

    assert backup_key_provider(first).primary_id == local_kek_id(base64.urlsafe_b64decode(key))


def test_a_kms_backup_key_wraps_each_backup_and_is_named_by_its_key_id(
    tmp_path: Path, aws: None
) -> None:
    import boto3  # type: ignore[import-untyped]

    key_id = boto3.client("kms", region_name="eu-west-1").create_key()["KeyMetadata"]["KeyId"]
    env = environment(tmp_path, ECHO_BACKUP_KMS_KEY_ID=key_id, ECHO_KMS_REGION="eu-west-1")
    settings, _ = load_settings(env)
    provider = backup_key_provider(settings)
    out = io.BytesIO()
    writer = ContainerWriter(out, {"kind": "data"}, provider)
    writer.write(b"content")
    writer.close()
    out.seek(0)

    header, content = read_content(out, backup_key_provider(settings))

    assert header.key_id == f"kms:{key_id}"
    assert b"".join(content) == b"content"
