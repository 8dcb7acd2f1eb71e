"""Local KEKs: the first wraps, every configured one unwraps, and ids reveal nothing."""

from __future__ import annotations

import hashlib

import pytest

from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError
from echo_identity.crypto.kek import LocalKekProvider, UnknownKekError, local_kek_id

OLD_KEK = bytes(range(32))
NEW_KEK = bytes(range(100, 132))
DEK = bytes(range(200, 232))
CONTEXT = "data_key:0123abcd:user:7"


def test_unwrap_returns_the_wrapped_dek() -> None:
    keks = LocalKekProvider([OLD_KEK])
    kek_id, wrapped = keks.wrap(DEK, CONTEXT)
    assert keks.unwrap(kek_id, wrapped, CONTEXT) == DEK


def test_wrapped_dek_does_not_contain_the_dek() -> None:
    _, wrapped = LocalKekProvider([OLD_KEK]).wrap(DEK, CONTEXT)
    assert DEK not in wrapped
    assert DEK.hex().encode() not in wrapped


def test_wrapping_is_the_aead_format_under_the_kek_with_a_dek_context() -> None:
    kek_id, wrapped = LocalKekProvider([OLD_KEK]).wrap(DEK, CONTEXT)
    assert aead.key_id_of(wrapped) == kek_id
    assert aead.decrypt(OLD_KEK, wrapped, "dek:" + CONTEXT) == DEK


def test_the_first_key_is_primary_and_wraps() -> None:
    keks = LocalKekProvider([NEW_KEK, OLD_KEK])
    assert keks.primary_id == local_kek_id(NEW_KEK)
    kek_id, wrapped = keks.wrap(DEK, CONTEXT)
    assert kek_id == keks.primary_id
    assert aead.decrypt(NEW_KEK, wrapped, "dek:" + CONTEXT) == DEK


def test_a_dek_wrapped_by_the_old_kek_unwraps_while_the_new_kek_is_primary() -> None:
    old_id, wrapped = LocalKekProvider([OLD_KEK]).wrap(DEK, CONTEXT)
    rotated = LocalKekProvider([NEW_KEK, OLD_KEK])
    assert rotated.primary_id != old_id
    assert rotated.unwrap(old_id, wrapped, CONTEXT) == DEK


def test_unwrapping_under_a_kek_no_longer_configured_names_its_id() -> None:
    old_id, wrapped = LocalKekProvider([OLD_KEK]).wrap(DEK, CONTEXT)
    with pytest.raises(UnknownKekError) as caught:
        LocalKekProvider([NEW_KEK]).unwrap(old_id, wrapped, CONTEXT)
    assert isinstance(caught.value, DecryptionError)
    assert caught.value.kek_id == old_id
    assert old_id in str(caught.value)


def test_a_dek_wrapped_for_another_context_does_not_unwrap() -> None:
    keks = LocalKekProvider([OLD_KEK])
    kek_id, wrapped = keks.wrap(DEK, CONTEXT)
    with pytest.raises(DecryptionError):
        keks.unwrap(kek_id, wrapped, "data_key:0123abcd:user:8")


def test_an_altered_wrapped_dek_does_not_unwrap() -> None:
    keks = LocalKekProvider([OLD_KEK])
    kek_id, wrapped = keks.wrap(DEK, CONTEXT)
    altered = wrapped[:-1] + bytes([wrapped[-1] ^ 0x80])
    with pytest.raises(DecryptionError):
        keks.unwrap(kek_id, altered, CONTEXT)


def test_a_dek_claimed_by_another_configured_kek_does_not_unwrap() -> None:
    keks = LocalKekProvider([NEW_KEK, OLD_KEK])
    _, wrapped = keks.wrap(DEK, CONTEXT)
    with pytest.raises(DecryptionError, match="not wrapped by") as caught:
        keks.unwrap(local_kek_id(OLD_KEK), wrapped, CONTEXT)
    assert not isinstance(caught.value, UnknownKekError)


def test_kek_id_is_a_domain_separated_digest_prefix_revealing_nothing_of_the_key() -> None:
    kek_id = local_kek_id(OLD_KEK)
    assert kek_id == "local:" + hashlib.sha256(b"echo-identity kek id" + OLD_KEK).hexdigest()[:16]
    # Not the plain digest of the key, which other systems may publish as a key check value.
    assert kek_id[len("local:") :] not in hashlib.sha256(OLD_KEK).hexdigest()
    assert OLD_KEK.hex()[:8] not in kek_id
    assert kek_id.isascii()
    assert len(kek_id) <= 64


def test_kek_ids_are_stable_and_differ_per_key() -> None:
    assert local_kek_id(OLD_KEK) != local_kek_id(NEW_KEK)
    assert local_kek_id(OLD_KEK) == local_kek_id(bytes(OLD_KEK))


@pytest.mark.parametrize(
    "keys",
    [[], [bytes(31)], [OLD_KEK, bytes(33)], [OLD_KEK, NEW_KEK, OLD_KEK]],
    ids=["none", "short", "long", "duplicate"],
)
def test_invalid_kek_configurations_are_refused(keys: list[bytes]) -> None:
    with pytest.raises(ValueError, match="key"):
        LocalKekProvider(keys)
