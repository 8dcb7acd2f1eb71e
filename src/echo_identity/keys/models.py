"""Data-encryption keys (DEKs) of the envelope design, stored wrapped by a KEK."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from echo_identity.db import Base, UTCDateTime, utcnow


class DataKey(Base):
    """One 256-bit DEK. ``owner`` is ``system`` or ``user:<id>``; the plaintext key is never
    stored, only ``wrapped`` under the KEK named by ``kek_id``. Destroying a user's DEKs makes
    every copy of their ciphertexts unreadable (crypto-shredding)."""

    __tablename__ = "data_keys"
    # At most one current DEK per owner, so racing first encryptions cannot both create one.
    __table_args__ = (
        Index(
            "uq_data_keys_current_owner",
            "owner",
            unique=True,
            postgresql_where=text("retired_at IS NULL"),
            sqlite_where=text("retired_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    # "local:<16 hex>" or "kms:<key id, alias or ARN>" (ARNs reach ~2048 chars in theory;
    # 300 covers key and alias ARNs in practice).
    kek_id: Mapped[str] = mapped_column(String(300))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when a newer DEK takes over encryption for the owner; still used to decrypt.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
