"""KmsKekProvider: DEKs wrapped by an AWS KMS key (moto in place of AWS), bound to their row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.exceptions import (  # type: ignore[import-untyped]
    ClientError,
    EndpointConnectionError,
)
from sqlalchemy import String, select

from echo_identity.crypto.aead import DecryptionError
from echo_identity.crypto.kek import LocalKekProvider, UnknownKekError
from echo_identity.db import Database
from echo_identity.keys.keyring import Keyring
from echo_identity.keys.kms import (
    MAX_KEK_ID_LENGTH,
    KmsKekProvider,
    KmsUnavailableError,
    KmsWrapError,
    client_config,
)
from echo_identity.keys.models import DataKey

REGION = "eu-west-1"
DEK = bytes(range(32))
CONTEXT = "data_key:0123abcd:user:7"
ALICE, ALICE_TOKEN = "user:1", "connection:1:refresh_token"


@pytest.fixture
def kms(aws: None) -> Any:
    return boto3.client("kms", region_name=REGION, config=client_config())


def new_key(kms: Any) -> str:
    return str(kms.create_key()["KeyMetadata"]["KeyId"])


@pytest.fixture
def keks(kms: Any) -> KmsKekProvider:
    return KmsKekProvider(new_key(kms), kms)


class FailingKms:
    """A KMS client whose every call fails with ``error``, as a throttled or unreachable
    KMS does (moto cannot simulate either)."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def encrypt(self, **kwargs: Any) -> Mapping[str, Any]:
        raise self._error

    def decrypt(self, **kwargs: Any) -> Mapping[str, Any]:
        raise self._error


def test_unwrap_returns_the_dek_that_wrap_wrapped(keks: KmsKekProvider) -> None:
    kek_id, wrapped = keks.wrap(DEK, CONTEXT)

    assert kek_id == keks.primary_id
    assert DEK not in wrapped
    assert keks.unwrap(kek_id, wrapped, CONTEXT) == DEK


def test_kek_id_is_kms_and_the_configured_key_id(kms: Any) -> None:
    key_id = new_key(kms)
    kms.create_alias(AliasName="alias/echo-vault", TargetKeyId=key_id)

    for configured in (key_id, "alias/echo-vault"):
        keks = KmsKekProvider(configured, kms)
        kek_id, wrapped = keks.wrap(DEK, CONTEXT)
        assert kek_id == keks.primary_id == "kms:" + configured
        assert keks.unwrap(kek_id, wrapped, CONTEXT) == DEK


def test_wrapped_dek_is_bound_to_the_echo_identity_encryption_context(
    kms: Any, keks: KmsKekProvider
) -> None:
    # Key policies and CloudTrail see this exact context, so it is part of the contract.
    _, wrapped = keks.wrap(DEK, CONTEXT)

    plaintext = kms.decrypt(CiphertextBlob=wrapped, EncryptionContext={"echo-identity": CONTEXT})

    assert plaintext["Plaintext"] == DEK


def test_unwrap_for_another_context_fails_naming_the_key_and_no_key_material(
    keks: KmsKekProvider,
) -> None:
    kek_id, wrapped = keks.wrap(DEK, CONTEXT)

    with pytest.raises(DecryptionError) as caught:
        keks.unwrap(kek_id, wrapped, "data_key:0123abcd:user:8")

    assert type(caught.value) is DecryptionError
    message = str(caught.value)
    assert keks.primary_id.removeprefix("kms:") in message
    assert "InvalidCiphertextException" in message
    for secret in (DEK.hex(), repr(DEK), wrapped.hex(), repr(wrapped)):
        assert secret not in message


def test_altered_wrapped_dek_fails_to_unwrap(keks: KmsKekProvider) -> None:
    kek_id, wrapped = keks.wrap(DEK, CONTEXT)
    altered = wrapped[:-1] + bytes([wrapped[-1] ^ 1])

    with pytest.raises(DecryptionError):
        keks.unwrap(kek_id, altered, CONTEXT)


def test_dek_wrapped_by_another_kms_key_fails_to_unwrap(kms: Any, keks: KmsKekProvider) -> None:
    other = KmsKekProvider(new_key(kms), kms)
    other_id, wrapped = other.wrap(DEK, CONTEXT)

    # Stored under our KEK id, KMS refuses: the ciphertext names the other key.
    with pytest.raises(DecryptionError) as caught:
        keks.unwrap(keks.primary_id, wrapped, CONTEXT)
    assert keks.primary_id.removeprefix("kms:") in str(caught.value)
    # Under its own KEK id, the other key is simply not configured here.
    with pytest.raises(UnknownKekError) as unknown:
        keks.unwrap(other_id, wrapped, CONTEXT)
    assert unknown.value.kek_id == other_id


def test_local_kek_id_is_unknown_to_the_kms_provider(keks: KmsKekProvider) -> None:
    local_id, wrapped = LocalKekProvider([bytes(32)]).wrap(DEK, CONTEXT)

    with pytest.raises(UnknownKekError) as caught:
        keks.unwrap(local_id, wrapped, CONTEXT)

    assert caught.value.kek_id == local_id


@pytest.mark.parametrize(
    "error",
    [
        ClientError({"Error": {"Code": "ThrottlingException"}}, "Decrypt"),
        ClientError({"Error": {"Code": "KMSInternalException"}}, "Decrypt"),
        EndpointConnectionError(endpoint_url="https://kms.eu-west-1.amazonaws.com/"),
    ],
    ids=["throttled", "kms-internal-error", "unreachable"],
)
def test_kms_that_cannot_answer_raises_kms_unavailable_not_a_verdict_on_the_dek(
    error: Exception,
) -> None:
    keks = KmsKekProvider("alias/echo-vault", FailingKms(error))

    with pytest.raises(KmsUnavailableError) as caught:
        keks.unwrap("kms:alias/echo-vault", b"wrapped", CONTEXT)

    assert isinstance(caught.value, DecryptionError)  # the protocol's one unwrap error
    assert "alias/echo-vault" in str(caught.value)
    assert "unavailable" in str(caught.value)


def test_access_denied_is_a_decryption_error_not_unavailability() -> None:
    denied = ClientError({"Error": {"Code": "AccessDeniedException"}}, "Decrypt")
    keks = KmsKekProvider("alias/echo-vault", FailingKms(denied))

    with pytest.raises(DecryptionError) as caught:
        keks.unwrap("kms:alias/echo-vault", b"wrapped", CONTEXT)

    assert not isinstance(caught.value, KmsUnavailableError)
    assert "AccessDeniedException" in str(caught.value)


def test_wrap_under_a_missing_key_fails_naming_the_key(kms: Any) -> None:
    keks = KmsKekProvider("alias/does-not-exist", kms)

    with pytest.raises(KmsWrapError) as caught:
        keks.wrap(DEK, CONTEXT)

    assert "alias/does-not-exist" in str(caught.value)
    assert "NotFoundException" in str(caught.value)
    assert DEK.hex() not in str(caught.value)


@pytest.mark.parametrize("key_id", ["", "alias/echo vault", "alias/\u00e9cho"])
def test_malformed_key_id_is_refused(kms: Any, key_id: str) -> None:
    with pytest.raises(ValueError, match="KMS key id"):
        KmsKekProvider(key_id, kms)


def test_key_id_whose_kek_id_overflows_the_data_keys_column_is_refused(kms: Any) -> None:
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert KmsKekProvider(arn, kms).primary_id == "kms:" + arn  # ARNs fit
    with pytest.raises(ValueError, match="longer than"):
        KmsKekProvider("alias/" + "k" * MAX_KEK_ID_LENGTH, kms)
    longest = "alias/" + "k" * (MAX_KEK_ID_LENGTH - len("kms:alias/"))
    assert len(KmsKekProvider(longest, kms).primary_id) == MAX_KEK_ID_LENGTH


def test_max_kek_id_length_is_the_width_of_the_data_keys_kek_id_column() -> None:
    column_type = DataKey.__table__.c.kek_id.type
    assert isinstance(column_type, String)
    assert column_type.length == MAX_KEK_ID_LENGTH


def test_client_config_fails_in_seconds_with_standard_retries() -> None:
    config = client_config()

    assert config.connect_timeout <= 5
    assert config.read_timeout <= 10
    assert config.retries == {"mode": "standard", "max_attempts": 3}


def test_keyring_encrypts_and_decrypts_with_deks_wrapped_by_kms(
    database: Database, kms: Any
) -> None:
    key_id = new_key(kms)
    with database.transaction() as session:
        ciphertext = Keyring(session, KmsKekProvider(key_id, kms)).encrypt(
            ALICE, b"gho_refresh", ALICE_TOKEN
        )

    with database.session() as session:
        [data_key] = session.scalars(select(DataKey)).all()
        assert data_key.kek_id == "kms:" + key_id
        assert Keyring(session, KmsKekProvider(key_id, kms)).decrypt(ciphertext, ALICE_TOKEN) == (
            b"gho_refresh"
        )
        # The wrapped DEK is bound to its row: moved to another owner, KMS refuses it.
        data_key.owner = "user:2"
        with pytest.raises(DecryptionError):
            Keyring(session, KmsKekProvider(key_id, kms)).decrypt(ciphertext, ALICE_TOKEN)
