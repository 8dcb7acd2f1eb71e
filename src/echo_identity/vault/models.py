"""Data-encryption keys (DEKs) of the envelope design, stored wrapped by a KEK."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from echo_identity.db import Base, UTCDateTime, utcnow


class DataKey(Base):
    """One 256-bit DEK. ``owner`` is ``system`` or ``user:<id>``; the plaintext key is never
    stored, only ``wrapped`` under the KEK named by ``kek_id``. Destroying a user's DEKs makes
    every copy of their ciphertexts unreadable (crypto-shredding)."""

    __tablename__ = "data_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    kek_id: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when a newer DEK takes over encryption for the owner; still used to decrypt.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
