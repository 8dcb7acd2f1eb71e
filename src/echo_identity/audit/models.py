"""Stored audit events, their hash-chain seal, signed checkpoints, the audit signing keys and
the deletable pseudonym map.

The seal lives on the event row itself (``chain_seq``, ``chain_hash``): both are ``NULL`` until
the sealer (:mod:`echo_identity.audit.sealer`) links the event into the chain, so an append
stays one INSERT and the sealer one UPDATE per event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from echo_identity.db import Base, UTCDateTime, utcnow

# SQLite only auto-increments INTEGER primary keys; PostgreSQL gets a 64-bit identity.
EventId = BigInteger().with_variant(Integer(), "sqlite")


class AuditEvent(Base):
    """One security-relevant event. Tokens appear only as ``sha256(token)[:12]``; people only
    as pseudonyms (:mod:`echo_identity.audit.pseudonyms`)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(EventId, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(128))
    subject: Mapped[str | None] = mapped_column(String(128))
    client_id: Mapped[str | None] = mapped_column(String(64), index=True)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    request_id: Mapped[str | None] = mapped_column(String(128))
    token_fingerprint: Mapped[str | None] = mapped_column(String(12))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Position in the hash chain (1, 2, ...) and the chain hash after this event; NULL = unsealed.
    chain_seq: Mapped[int | None] = mapped_column(BigInteger, index=True, unique=True)
    chain_hash: Mapped[str | None] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed statement "the chain up to ``seq`` ends in ``head_hash``", one per seal batch."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(EventId, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    # Events recorded up to this time were eligible for sealing when the checkpoint was made.
    sealed_through: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class AuditChainAnchor(Base):
    """A signed statement "the chain now starts at ``first_kept_seq``": written by the pruner
    (:mod:`echo_identity.audit.retention`) before it deletes the events before that position.
    ``previous_hash`` is the chain hash the first kept event links to; ``pruned_count`` (all
    prunes together, so ``first_kept_seq - 1``) events recorded between ``pruned_from`` and
    ``pruned_through`` are gone. Only the newest anchor is kept."""

    __tablename__ = "audit_chain_anchors"

    id: Mapped[int] = mapped_column(EventId, primary_key=True)
    first_kept_seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    first_kept_event_id: Mapped[int] = mapped_column(BigInteger)
    previous_hash: Mapped[str] = mapped_column(String(64))
    pruned_count: Mapped[int] = mapped_column(BigInteger)
    pruned_from: Mapped[datetime] = mapped_column(UTCDateTime)
    pruned_through: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class AuditSigningKey(Base):
    """The Ed25519 key that signs checkpoints; private half encrypted with the system DEK.

    Kept apart from the OIDC ``signing_keys`` so it is never published in the OIDC JWKS (a
    relying party must not accept a token signed with it)."""

    __tablename__ = "audit_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_jwk: Mapped[dict[str, str]] = mapped_column(JSON)
    private_key_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditPseudonym(Base):
    """Which user a pseudonym stands for. Deleting a row forgets the person; the chain, which
    holds only the pseudonym, still verifies."""

    __tablename__ = "audit_pseudonyms"

    pseudonym: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_sub: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RefusalWindow(Base):
    """Repeated identical refusals (lock-outs, denied API calls from one address) within one
    window: the first is recorded as an audit event, the rest only counted here, so an attacker
    cannot grow the trail at line rate. ``key`` is a digest of event type, address and reason."""

    __tablename__ = "audit_refusal_windows"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    count: Mapped[int] = mapped_column(Integer, default=1)
    # Part of the key, kept so the window's summary event can be grouped like its first event
    ip: Mapped[str | None] = mapped_column(String(45))
    client_id: Mapped[str | None] = mapped_column(String(64))
