"""Generation of JWS signing keys (RS256, ES256, EdDSA), shared by the OpenID provider's
signing keys (``idp/keys.py``) and the audit signing key (``audit/keys.py``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from joserfc.jwk import ECKey, OKPKey, RSAKey

ALGORITHMS = ("RS256", "ES256", "EdDSA")
JWTKey = RSAKey | ECKey | OKPKey


@contextmanager
def eddsa_allowed() -> Iterator[None]:
    """Silence joserfc's deprecation notice for ``EdDSA`` (RFC 9864 prefers ``Ed25519``).

    We sign with the name ``EdDSA`` because relying-party libraries widely understand it
    and few understand ``Ed25519`` yet; the signature (Ed25519) is the same.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EdDSA is deprecated")
        yield


def generate_key(alg: str) -> JWTKey:
    """A fresh private key for ``alg``; raises ``ValueError`` for an unsupported one."""
    if alg == "RS256":
        return RSAKey.generate_key(2048, private=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", private=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}; use one of {', '.join(ALGORITHMS)}")
