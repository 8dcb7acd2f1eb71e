"""kek_provider(settings): local keys, an AWS KMS key (moto), and the move from one to the other."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.config import ConfigError, Settings, load_settings
from echo_identity.crypto.aead import DecryptionError
from echo_identity.crypto.kek import LocalKekProvider, UnknownKekError, local_kek_id
from echo_identity.db import Database
from echo_identity.keys.kek_providers import CombinedKekProvider, kek_provider, keyring_factory
from echo_identity.keys.keyring import Keyring
from echo_identity.keys.models import DataKey
from tests.support.environment import app_environment

REGION = "eu-west-1"
LOCAL_KEK = bytes(range(32))
DEK = bytes(range(100, 132))
CONTEXT = "data_key:0123abcd:user:7"
SECRETS = {"system": b"client-secret", "user:1": b"gho_alice", "user:2": b"gho_bob"}


@pytest.fixture
def kms_key(aws: None) -> str:
    return str(boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"])


def production_settings(tmp_path: Path, **extra: str) -> Settings:
    """Production settings with a local KEK (``LOCAL_KEK``) unless ``extra`` unsets it."""
    env = app_environment(
        tmp_path / "var",
        f"sqlite:///{tmp_path / 'echo.db'}",
        production=True,
        **{"ECHO_VAULT_KEK": base64.urlsafe_b64encode(LOCAL_KEK).decode(), **extra},
    )
    settings, _ = load_settings(env)
    return settings


def kms_only(tmp_path: Path, key_id: str) -> Settings:
    # An empty variable counts as unset.
    return production_settings(
        tmp_path, ECHO_VAULT_KEK="", ECHO_KMS_KEY_ID=key_id, ECHO_KMS_REGION=REGION
    )


def local_and_kms(tmp_path: Path, key_id: str) -> Settings:
    return production_settings(tmp_path, ECHO_KMS_KEY_ID=key_id, ECHO_KMS_REGION=REGION)


def encrypt_secrets(session: Session, keks: Any) -> dict[str, bytes]:
    keyring = Keyring(session, keks)
    return {
        owner: keyring.encrypt(owner, secret, owner + ":ctx") for owner, secret in SECRETS.items()
    }


def assert_secrets_decrypt(session: Session, keks: Any, ciphertexts: dict[str, bytes]) -> None:
    keyring = Keyring(session, keks)
    for owner, ciphertext in ciphertexts.items():
        assert keyring.decrypt(ciphertext, owner + ":ctx") == SECRETS[owner]


def kek_ids(database: Database) -> set[str]:
    with database.session() as session:
        return set(session.scalars(select(DataKey.kek_id)))


def test_local_kek_only_gives_the_local_provider(tmp_path: Path) -> None:
    keks = kek_provider(production_settings(tmp_path))

    assert isinstance(keks, LocalKekProvider)
    assert keks.primary_id == local_kek_id(LOCAL_KEK)


def test_kms_key_id_makes_kms_wrap_new_deks(tmp_path: Path, kms_key: str) -> None:
    for settings in (kms_only(tmp_path, kms_key), local_and_kms(tmp_path, kms_key)):
        keks = kek_provider(settings)
        kek_id, wrapped = keks.wrap(DEK, CONTEXT)
        assert kek_id == keks.primary_id == "kms:" + kms_key
        assert keks.unwrap(kek_id, wrapped, CONTEXT) == DEK


def test_local_keks_still_unwrap_beside_kms(tmp_path: Path, kms_key: str) -> None:
    local_id, wrapped = LocalKekProvider([LOCAL_KEK]).wrap(DEK, CONTEXT)

    keks = kek_provider(local_and_kms(tmp_path, kms_key))

    assert keks.unwrap(local_id, wrapped, CONTEXT) == DEK
    with pytest.raises(DecryptionError):
        keks.unwrap(local_id, wrapped, "data_key:0123abcd:user:8")


def test_kms_only_provider_refuses_local_kek_ids(tmp_path: Path, kms_key: str) -> None:
    local_id, wrapped = LocalKekProvider([LOCAL_KEK]).wrap(DEK, CONTEXT)

    with pytest.raises(UnknownKekError):
        kek_provider(kms_only(tmp_path, kms_key)).unwrap(local_id, wrapped, CONTEXT)


def test_combined_provider_refuses_kek_ids_of_a_scheme_it_does_not_have() -> None:
    keks = CombinedKekProvider(LocalKekProvider([LOCAL_KEK]), [])

    for kek_id in ("kms:alias/echo-vault", "no-scheme"):
        with pytest.raises(UnknownKekError) as caught:
            keks.unwrap(kek_id, b"wrapped", CONTEXT)
        assert caught.value.kek_id == kek_id


def test_combined_provider_refuses_two_providers_of_one_scheme() -> None:
    with pytest.raises(ValueError, match="local:"):
        CombinedKekProvider(LocalKekProvider([LOCAL_KEK]), [LocalKekProvider([bytes(32)])])


def test_migration_from_a_local_kek_to_kms_keeps_every_secret_readable(
    tmp_path: Path, database: Database, kms_key: str
) -> None:
    with database.transaction() as session:
        ciphertexts = encrypt_secrets(session, kek_provider(production_settings(tmp_path)))
    assert kek_ids(database) == {local_kek_id(LOCAL_KEK)}

    # Step 1: KMS configured beside the local KEK; old DEKs still decrypt.
    migrating = kek_provider(local_and_kms(tmp_path, kms_key))
    with database.session() as session:
        assert_secrets_decrypt(session, migrating, ciphertexts)
    # Step 2: re-wrap (echo-identity vault rotate-kek).
    with database.transaction() as session:
        assert Keyring(session, migrating).rewrap_all() == len(SECRETS)
    assert kek_ids(database) == {"kms:" + kms_key}

    # Step 3: the local KEK removed; KMS alone reads everything.
    with database.session() as session:
        assert_secrets_decrypt(session, kek_provider(kms_only(tmp_path, kms_key)), ciphertexts)


def test_keyring_factory_wraps_deks_with_the_configured_kms_key(
    tmp_path: Path, database: Database, kms_key: str
) -> None:
    with database.transaction() as session:
        keyring_factory(kms_only(tmp_path, kms_key))(session).encrypt("system", b"x", "ctx")

    assert kek_ids(database) == {"kms:" + kms_key}


def test_production_with_only_a_kms_key_loads_without_local_keks(tmp_path: Path) -> None:
    settings, generated = load_settings(
        app_environment(
            tmp_path / "var",
            f"sqlite:///{tmp_path / 'echo.db'}",
            production=True,
            ECHO_VAULT_KEK="",
            ECHO_KMS_KEY_ID="alias/echo-vault",
        )
    )

    assert settings.kms_key_id == "alias/echo-vault"
    assert settings.kms_region is None
    assert settings.vault_keks() == []
    assert generated == []


def test_production_without_vault_kek_or_kms_key_names_both_variables(tmp_path: Path) -> None:
    env = app_environment(
        tmp_path / "var", f"sqlite:///{tmp_path / 'echo.db'}", production=True, ECHO_VAULT_KEK=""
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(env)

    assert "ECHO_VAULT_KEK" in str(caught.value)
    assert "ECHO_KMS_KEY_ID" in str(caught.value)


def test_development_with_a_kms_key_generates_no_local_kek(tmp_path: Path, kms_key: str) -> None:
    var_dir = tmp_path / "var"
    env = {"ECHO_DEV_MODE": "1", "ECHO_VAR_DIR": str(var_dir), "ECHO_KMS_KEY_ID": kms_key}

    settings, generated = load_settings({**env, "ECHO_KMS_REGION": REGION})

    assert [secret.variable for secret in generated] == ["ECHO_SECRET_KEY"]
    assert not (var_dir / "vault_kek").exists()
    assert kek_provider(settings).primary_id == "kms:" + kms_key


def test_kms_region_defaults_to_boto3_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kms_key: str
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    settings = production_settings(tmp_path, ECHO_VAULT_KEK="", ECHO_KMS_KEY_ID=kms_key)

    keks = kek_provider(settings)

    kek_id, wrapped = keks.wrap(DEK, CONTEXT)
    assert keks.unwrap(kek_id, wrapped, CONTEXT) == DEK


def test_kms_without_any_region_names_echo_kms_region(tmp_path: Path, aws: None) -> None:
    settings = production_settings(tmp_path, ECHO_VAULT_KEK="", ECHO_KMS_KEY_ID="alias/echo")

    with pytest.raises(ConfigError) as caught:
        kek_provider(settings)

    assert caught.value.variable == "ECHO_KMS_REGION"


def test_kms_key_id_too_long_for_the_kek_id_column_names_the_variable(
    tmp_path: Path, aws: None
) -> None:
    with pytest.raises(ConfigError) as caught:
        kek_provider(kms_only(tmp_path, "alias/" + "k" * 400))

    assert caught.value.variable == "ECHO_KMS_KEY_ID"
    assert "\n" not in str(caught.value)


def test_kms_without_boto3_asks_for_the_kms_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` fail

    with pytest.raises(ConfigError) as caught:
        kek_provider(kms_only(tmp_path, "alias/echo-vault"))

    assert caught.value.variable == "ECHO_KMS_KEY_ID"
    assert "echo-identity[kms]" in str(caught.value)


def test_base_install_without_boto3_wires_local_keys(tmp_path: Path) -> None:
    script = f"""
import sys
sys.modules.update(boto3=None, botocore=None)  # as if the kms extra were not installed
from echo_identity.config import load_settings
from echo_identity.keys.kek_providers import kek_provider, keyring_factory
from tests.support.environment import app_environment
settings, _ = load_settings(app_environment({str(tmp_path)!r}, "sqlite://", production=True))
keyring_factory(settings)
print(kek_provider(settings).primary_id)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[3],
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("local:")
