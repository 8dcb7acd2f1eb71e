"""The AES-256-GCM envelope: round trips, and any other key, context or byte is rejected."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError

# No example database: nothing is written under the working tree.
properties = settings(database=None, max_examples=200)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
KEY_ID = "dek-7"

keys = st.binary(min_size=32, max_size=32)
key_ids = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=127), min_size=1, max_size=64
)
contexts = st.text(max_size=80)
plaintexts = st.binary(max_size=300)


@properties
@given(key=keys, key_id=key_ids, plaintext=plaintexts, context=contexts)
def test_decrypt_returns_the_plaintext_for_the_same_key_and_context(
    key: bytes, key_id: str, plaintext: bytes, context: str
) -> None:
    ciphertext = aead.encrypt(key, key_id, plaintext, context)
    assert aead.decrypt(key, ciphertext, context) == plaintext
    assert aead.key_id_of(ciphertext) == key_id


def test_ciphertext_is_version_key_id_nonce_then_gcm_output_over_header_and_context() -> None:
    context = "connection:42:refresh_token"
    ciphertext = aead.encrypt(KEY, KEY_ID, b"refresh-token", context)
    header_length = 2 + len(KEY_ID) + 12
    header = ciphertext[:header_length]
    assert header[0] == 1
    assert header[1] == len(KEY_ID)
    assert header[2 : 2 + len(KEY_ID)] == KEY_ID.encode()
    nonce = header[-12:]
    body = ciphertext[header_length:]
    assert len(body) == len(b"refresh-token") + 16
    associated_data = header + context.encode()
    assert AESGCM(KEY).decrypt(nonce, body, associated_data) == b"refresh-token"


def test_each_encryption_uses_a_fresh_nonce() -> None:
    ciphertexts = {aead.encrypt(KEY, KEY_ID, b"same", "ctx") for _ in range(50)}
    assert len(ciphertexts) == 50
    nonces = {ciphertext[2 + len(KEY_ID) : 2 + len(KEY_ID) + 12] for ciphertext in ciphertexts}
    assert len(nonces) == 50


@properties
@given(plaintext=plaintexts, context=contexts, data=st.data())
def test_any_single_byte_change_is_rejected(
    plaintext: bytes, context: str, data: st.DataObject
) -> None:
    ciphertext = aead.encrypt(KEY, KEY_ID, plaintext, context)
    position = data.draw(st.integers(min_value=0, max_value=len(ciphertext) - 1), "position")
    mask = data.draw(st.integers(min_value=1, max_value=255), "mask")
    altered = bytearray(ciphertext)
    altered[position] ^= mask
    with pytest.raises(DecryptionError):
        aead.decrypt(KEY, bytes(altered), context)


@properties
@given(plaintext=plaintexts, context=contexts, data=st.data())
def test_any_truncation_is_rejected(plaintext: bytes, context: str, data: st.DataObject) -> None:
    ciphertext = aead.encrypt(KEY, KEY_ID, plaintext, context)
    length = data.draw(st.integers(min_value=0, max_value=len(ciphertext) - 1), "length")
    with pytest.raises(DecryptionError):
        aead.decrypt(KEY, ciphertext[:length], context)


@properties
@given(plaintext=plaintexts, context=contexts, extra=st.binary(min_size=1, max_size=32))
def test_appended_bytes_are_rejected(plaintext: bytes, context: str, extra: bytes) -> None:
    ciphertext = aead.encrypt(KEY, KEY_ID, plaintext, context)
    with pytest.raises(DecryptionError):
        aead.decrypt(KEY, ciphertext + extra, context)


@properties
@given(key=keys, other=keys, plaintext=plaintexts, context=contexts)
def test_another_key_is_rejected(key: bytes, other: bytes, plaintext: bytes, context: str) -> None:
    if other == key:
        other = bytes(b ^ 1 for b in key)
    ciphertext = aead.encrypt(key, KEY_ID, plaintext, context)
    with pytest.raises(DecryptionError):
        aead.decrypt(other, ciphertext, context)


@properties
@given(plaintext=plaintexts, context=contexts, other=contexts)
def test_another_context_is_rejected(plaintext: bytes, context: str, other: str) -> None:
    if other == context:
        other = context + "x"
    ciphertext = aead.encrypt(KEY, KEY_ID, plaintext, context)
    with pytest.raises(DecryptionError):
        aead.decrypt(KEY, ciphertext, other)


@properties
@given(first=plaintexts, second=plaintexts)
def test_ciphertexts_swapped_between_rows_fail_in_both(first: bytes, second: bytes) -> None:
    a_context, b_context = "connection:1:refresh_token", "connection:2:refresh_token"
    a_ciphertext = aead.encrypt(KEY, KEY_ID, first, a_context)
    b_ciphertext = aead.encrypt(KEY, KEY_ID, second, b_context)
    with pytest.raises(DecryptionError):
        aead.decrypt(KEY, b_ciphertext, a_context)
    with pytest.raises(DecryptionError):
        aead.decrypt(KEY, a_ciphertext, b_context)


def test_ciphertext_moved_to_another_field_of_the_same_row_fails() -> None:
    ciphertext = aead.encrypt(KEY, KEY_ID, b"token", "connection:1:refresh_token")
    with pytest.raises(DecryptionError):
        aead.decrypt(KEY, ciphertext, "connection:1:access_token")


def test_key_id_edited_in_the_header_is_rejected_even_with_the_same_key() -> None:
    ciphertext = aead.encrypt(KEY, "dek-7", b"token", "ctx")
    relabelled = ciphertext.replace(b"dek-7", b"dek-8", 1)
    assert aead.key_id_of(relabelled) == "dek-8"
    with pytest.raises(DecryptionError):
        aead.decrypt(KEY, relabelled, "ctx")


def test_unknown_format_version_is_rejected_with_its_number() -> None:
    ciphertext = bytes([2]) + aead.encrypt(KEY, KEY_ID, b"token", "ctx")[1:]
    with pytest.raises(DecryptionError, match="unknown format version 2"):
        aead.decrypt(KEY, ciphertext, "ctx")
    with pytest.raises(DecryptionError, match="unknown format version 2"):
        aead.key_id_of(ciphertext)


@pytest.mark.parametrize(
    "ciphertext",
    [
        b"",
        b"\x01",
        b"\x01\x00" + bytes(40),  # empty key id
        b"\x01\x41" + bytes(100),  # key id longer than 64 bytes
        b"\x01\x03\xff\xfe\xfd" + bytes(28),  # key id not ASCII
        b"\x01\x05dek-7" + bytes(11),  # nonce cut short
    ],
    ids=["empty", "version-only", "empty-key-id", "long-key-id", "non-ascii-key-id", "short-nonce"],
)
def test_malformed_headers_raise_decryption_error(ciphertext: bytes) -> None:
    with pytest.raises(DecryptionError):
        aead.key_id_of(ciphertext)
    with pytest.raises(DecryptionError):
        aead.decrypt(KEY, ciphertext, "ctx")


def test_authentication_failures_share_one_message_that_reveals_no_secret() -> None:
    ciphertext = aead.encrypt(KEY, KEY_ID, b"s3cret-token", "ctx")
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    messages = set()
    for key, candidate, context in [
        (OTHER_KEY, ciphertext, "ctx"),
        (KEY, ciphertext, "other"),
        (KEY, tampered, "ctx"),
    ]:
        with pytest.raises(DecryptionError) as caught:
            aead.decrypt(key, candidate, context)
        messages.add(str(caught.value))
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__
    assert len(messages) == 1
    message = messages.pop()
    assert "s3cret" not in message
    for key in (KEY, OTHER_KEY):
        assert key.hex() not in message
        assert repr(key) not in message


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33, 64])
def test_keys_other_than_256_bits_are_refused(length: int) -> None:
    key = bytes(length)
    with pytest.raises(ValueError, match="32 bytes"):
        aead.encrypt(key, KEY_ID, b"token", "ctx")
    ciphertext = aead.encrypt(KEY, KEY_ID, b"token", "ctx")
    with pytest.raises(ValueError, match="32 bytes"):
        aead.decrypt(key, ciphertext, "ctx")


@pytest.mark.parametrize("key_id", ["", "k" * 65, "clé"], ids=["empty", "too-long", "non-ascii"])
def test_key_ids_must_be_1_to_64_ascii_characters(key_id: str) -> None:
    with pytest.raises(ValueError, match="key id"):
        aead.encrypt(KEY, key_id, b"token", "ctx")


def test_a_64_character_key_id_is_accepted() -> None:
    ciphertext = aead.encrypt(KEY, "k" * 64, b"token", "ctx")
    assert aead.key_id_of(ciphertext) == "k" * 64
    assert aead.decrypt(KEY, ciphertext, "ctx") == b"token"
