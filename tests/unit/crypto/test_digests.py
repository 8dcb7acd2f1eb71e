"""Fingerprints, keyed digests and derived keys: deterministic, separated by key and purpose."""

from __future__ import annotations

import hashlib

from echo_identity.crypto.digests import (
    derive_key,
    digests_match,
    fingerprint,
    keyed_digest,
    lookup_digest,
)


def test_fingerprint_is_the_first_12_hex_digits_of_sha256() -> None:
    # FIPS 180-2 test vector: SHA-256("abc") = ba7816bf8f01cfea...
    assert fingerprint("abc") == "ba7816bf8f01"
    assert fingerprint("rt-123") == hashlib.sha256(b"rt-123").hexdigest()[:12]


def test_fingerprint_of_text_and_of_its_utf8_bytes_agree() -> None:
    assert fingerprint("jeton-é") == fingerprint("jeton-é".encode())


def test_lookup_digest_is_the_full_sha256_hex() -> None:
    assert lookup_digest("abc") == hashlib.sha256(b"abc").hexdigest()


def test_keyed_digest_is_hmac_sha256() -> None:
    # RFC 4231, test case 2.
    assert keyed_digest(b"Jefe", "what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_keyed_digest_differs_per_key() -> None:
    assert keyed_digest(b"k" * 32, "client-secret") != keyed_digest(b"q" * 32, "client-secret")


def test_derive_key_is_a_deterministic_256_bit_key() -> None:
    master = bytes(range(32))
    assert derive_key(master, "session") == derive_key(master, "session")
    assert len(derive_key(master, "session")) == 32


def test_derive_key_differs_per_purpose_and_per_master() -> None:
    master = bytes(range(32))
    keys = {
        derive_key(master, "session"),
        derive_key(master, "csrf"),
        derive_key(bytes(32), "session"),
    }
    assert len(keys) == 3
    assert master not in keys


def test_digests_match_only_equal_digests() -> None:
    digest = keyed_digest(b"k" * 32, "value")
    assert digests_match(digest, keyed_digest(b"k" * 32, "value"))
    assert not digests_match(digest, keyed_digest(b"k" * 32, "other"))
    assert not digests_match(digest, digest[:-1])
    assert not digests_match(digest, "")
