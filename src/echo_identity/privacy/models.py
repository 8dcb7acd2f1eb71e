"""The erasure record: how far the erasure of one user got, so a rerun finishes the job."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from echo_identity.db import Base, UTCDateTime


class Erasure(Base):
    """One user's erasure (``privacy.erasure``). It outlives the ``users`` row on purpose and
    holds no personal data beyond the ``sub``, and that only until the erasure completes:
    the pseudonym (already in the audit trail; how a rerun finds the record), the former
    primary key (the owner of the user's data keys and browser sessions, needed by a rerun
    after the row is gone), who asked, and when each step finished (``NULL``: not yet).
    """

    __tablename__ = "privacy_erasures"

    id: Mapped[int] = mapped_column(primary_key=True)
    sub: Mapped[str | None] = mapped_column(String(36))  # NULL once completed
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int]  # no foreign key: the users row is deleted in step 4
    requested_by: Mapped[str] = mapped_column(String(16))  # "user" (account page) or "cli"
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    upstream_failures: Mapped[int] = mapped_column(default=0)
    upstream_revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    credentials_revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    data_keys_destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rows_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pseudonym_forgotten_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
