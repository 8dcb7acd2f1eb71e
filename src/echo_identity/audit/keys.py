"""The audit signing key: an Ed25519 key that signs chain checkpoints.

Created on first use, its private half encrypted with the system DEK exactly like the OIDC
signing keys (:class:`echo_identity.keys.keyring.Keyring`, context
``audit_signing_key:<kid>:private_key``, declared once as :data:`PRIVATE_KEY`). Its public
half is published as a JWK Set at ``/.well-known/audit-keys`` and never in the OIDC JWKS, so
no relying party can be made to accept a token signed with it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc.jwk import OKPKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.audit.models import AuditSigningKey
from echo_identity.crypto.jwk import eddsa_allowed, generate_key
from echo_identity.db import utcnow
from echo_identity.keys.columns import EncryptedColumn
from echo_identity.keys.keyring import SYSTEM_OWNER, Keyring, KeyringFactory


@dataclass(frozen=True)
class LoadedAuditKey:
    kid: str
    private_key: Ed25519PrivateKey


# Declared once: the signer below and key rotation (schema.ENCRYPTED_COLUMNS) both read it.
PRIVATE_KEY = EncryptedColumn(
    AuditSigningKey.private_key_ciphertext,
    context="audit_signing_key:{row}:private_key",
    owner=SYSTEM_OWNER,
)


def public_keys(session: Session) -> dict[str, Ed25519PublicKey]:
    """Every audit key's public half by kid (no decryption, no KEK needed)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for row in session.scalars(select(AuditSigningKey)):
        public = OKPKey.import_key(dict(row.public_jwk)).public_key
        if isinstance(public, Ed25519PublicKey):
            keys[row.kid] = public
    return keys


def audit_jwks(session: Session) -> dict[str, Any]:
    """The published JWK Set of audit keys (oldest first)."""
    rows = session.scalars(select(AuditSigningKey).order_by(AuditSigningKey.created_at))
    return {"keys": [dict(row.public_jwk) for row in rows]}


class AuditSigner:
    """Signs with the newest audit key, creating the first one when there is none.

    The decrypted key is kept in memory for the life of the process; thread-safe.
    """

    def __init__(self, keyring_for: KeyringFactory) -> None:
        self._keyring_for = keyring_for
        self._lock = threading.Lock()
        self._loaded: LoadedAuditKey | None = None

    def key(self, session: Session) -> LoadedAuditKey:
        """The signing key; a new key is flushed in ``session`` (the caller commits).

        Raises ``DecryptionError`` when the stored key cannot be decrypted with the
        configured KEKs.
        """
        with self._lock:
            if self._loaded is not None:
                return self._loaded
            row = session.scalars(
                select(AuditSigningKey).order_by(AuditSigningKey.created_at.desc()).limit(1)
            ).first()
            keyring = self._keyring_for(session)
            loaded = self._create(session, keyring) if row is None else self._load(row, keyring)
            if row is not None:  # a key created in an uncommitted transaction is not cached
                self._loaded = loaded
            return loaded

    def _create(self, session: Session, keyring: Keyring) -> LoadedAuditKey:
        key = generate_key("EdDSA")
        kid = "audit-" + key.thumbprint()[:32]
        with eddsa_allowed():
            public = {**key.as_dict(private=False), "kid": kid, "alg": "EdDSA", "use": "sig"}
        session.add(
            AuditSigningKey(
                kid=kid,
                public_jwk={k: str(v) for k, v in public.items()},
                private_key_ciphertext=keyring.encrypt(
                    PRIVATE_KEY.owner_for(), key.as_pem(private=True), PRIVATE_KEY.context_for(kid)
                ),
                created_at=utcnow(),
            )
        )
        session.flush()
        return LoadedAuditKey(kid, _ed25519(key))

    @staticmethod
    def _load(row: AuditSigningKey, keyring: Keyring) -> LoadedAuditKey:
        pem = keyring.decrypt(row.private_key_ciphertext, PRIVATE_KEY.context_for(row.kid))
        return LoadedAuditKey(row.kid, _ed25519(OKPKey.import_key(pem)))


def _ed25519(key: Any) -> Ed25519PrivateKey:
    private = key.private_key
    if not isinstance(private, Ed25519PrivateKey):
        raise TypeError("the audit signing key is not an Ed25519 key")
    return private
