"""Alerts raised by the detection rules, their per-channel deliveries, and the rules' cursor."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from echo_identity.db import Base, UTCDateTime, utcnow


class Alert(Base):
    """One finding of a rule; a repeat with the same rule and key within the de-duplication
    window updates ``last_seen_at``/``occurrences`` instead of raising a new alert."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_rule_key_created", "rule", "key", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rule: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(255))
    summary: Mapped[str] = mapped_column(String(500))
    evidence: Mapped[list[int]] = mapped_column(JSON, default=list)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)


class AlertDelivery(Base):
    """The state of one alert on one channel: ``pending`` until a send succeeds
    (``delivered``); a failed send stays ``failed`` and is retried at ``next_attempt_at``."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        UniqueConstraint("alert_id", "channel"),
        Index("ix_alert_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(300))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DetectionCursor(Base):
    """The last audit event id the detection pass has evaluated (one row per named pass)."""

    __tablename__ = "detection_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
