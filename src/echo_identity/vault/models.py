"""The vault's tables: providers, connections (encrypted tokens) and consents, and the
declarations of their encrypted columns, which the writers and key rotation both read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from echo_identity.db import Base, UTCDateTime, utcnow
from echo_identity.keys.columns import EncryptedColumn
from echo_identity.keys.keyring import SYSTEM_OWNER, USER_OWNER


class Provider(Base):
    """A third-party OAuth provider users can connect (GitHub, Google, another IdP …).

    The client secret is stored only envelope-encrypted (system DEK, context
    ``provider:<id>:client_secret``).
    """

    __tablename__ = "vault_providers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    issuer: Mapped[str | None] = mapped_column(String(500))
    authorize_url: Mapped[str] = mapped_column(String(1000))
    token_url: Mapped[str] = mapped_column(String(1000))
    revocation_url: Mapped[str | None] = mapped_column(String(1000))
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    scope: Mapped[str] = mapped_column(String(1000), default="")
    authorize_params: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Connection(Base):
    """A user's connection to a provider. Tokens are stored only envelope-encrypted under the
    user's DEK, each bound to this row and field (``connection:<id>:access_token``)."""

    __tablename__ = "vault_connections"
    # Half of each PostgreSQL page left free: DEK rotation then rewrites rows in place (HOT
    # updates, no index entries); see migration 0007 and docs/key-rotation.md.
    __table_args__ = (
        UniqueConstraint("user_id", "provider_id"),
        {"postgresql_with": {"fillfactor": 50}},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider_id: Mapped[int] = mapped_column(
        ForeignKey("vault_providers.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(20), default="active")
    access_token_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    refresh_token_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    token_type: Mapped[str] = mapped_column(String(40), default="Bearer")
    scope: Mapped[str] = mapped_column(String(1000), default="")
    # When the access token expires (None: the provider did not say).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # When the worker should refresh next (expiry minus the window, or +24 h without expiry).
    refresh_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refresh_failures: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ConnectionConsent(Base):
    """The record of a user's consent to store a provider's tokens (GDPR art. 7(1) evidence)."""

    __tablename__ = "vault_consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider_name: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(1000))
    consent_text_version: Mapped[str] = mapped_column(String(20))
    # The services (OAuth client ids) the consent page named as receiving the token: a
    # client-credentials token may fetch this user's token only if its client is listed here.
    client_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# Each encrypted column, declared once: the writers take its context and owner from here, and
# key rotation re-encrypts it (schema.ENCRYPTED_COLUMNS lists every domain's).
ACCESS_TOKEN = EncryptedColumn(
    Connection.access_token_ciphertext,
    context="connection:{row}:access_token",
    owner=USER_OWNER,
    owner_column=Connection.user_id,
)
REFRESH_TOKEN = EncryptedColumn(
    Connection.refresh_token_ciphertext,
    context="connection:{row}:refresh_token",
    owner=USER_OWNER,
    owner_column=Connection.user_id,
)
CLIENT_SECRET = EncryptedColumn(
    Provider.client_secret_ciphertext,
    context="provider:{row}:client_secret",
    owner=SYSTEM_OWNER,
)
