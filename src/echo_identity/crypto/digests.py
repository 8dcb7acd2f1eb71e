"""Digests for secrets that are looked up but never stored: fingerprints and keyed digests."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def fingerprint(token: str | bytes) -> str:
    """The traceable, non-reversible form of a token for logs and audit: ``sha256(token)[:12]``."""
    raw = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(raw).hexdigest()[:12]


def lookup_digest(token: str) -> str:
    """Full SHA-256 hex digest of a high-entropy token, used as its database key.

    Only for random tokens of at least 128 bits (session ids, codes): the digest lets us find
    the row without storing anything that could be replayed.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def derive_key(master: bytes, purpose: str) -> bytes:
    """A 256-bit subkey of ``master`` dedicated to ``purpose`` (HMAC-SHA256 as a PRF)."""
    return hmac.new(master, b"echo-identity:" + purpose.encode(), hashlib.sha256).digest()


def keyed_digest(key: bytes, value: str) -> str:
    """HMAC-SHA256 of ``value`` under ``key``, hex encoded."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def digests_match(expected: str, candidate: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(expected.encode(), candidate.encode())


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random token carrying ``nbytes`` bytes of entropy."""
    return secrets.token_urlsafe(nbytes)
