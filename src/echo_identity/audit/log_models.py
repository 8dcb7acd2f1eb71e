"""Application-log events received on /log, one row per event, queryable per source."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from echo_identity.audit.models import EventId
from echo_identity.db import Base, UTCDateTime, utcnow


class ApplicationLog(Base):
    """A log event a service sent to /log; ``source`` is the client id of its access token."""

    __tablename__ = "application_logs"
    __table_args__ = (Index("ix_application_logs_source_received", "source", "received_at"),)

    id: Mapped[int] = mapped_column(EventId, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(128))
