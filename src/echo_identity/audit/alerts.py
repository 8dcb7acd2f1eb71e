"""Raising alerts from findings (de-duplicated) and reading them back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.audit.alert_models import Alert, AlertDelivery
from echo_identity.audit.rules import MAX_EVIDENCE, Finding
from echo_identity.logs import get_logger

log = get_logger("echo_identity.audit.alerts")


def raise_alert(
    session: Session,
    finding: Finding,
    *,
    now: datetime,
    dedup_window: timedelta,
    channels: Sequence[str],
) -> Alert | None:
    """Store ``finding`` as a new alert with a pending delivery per channel, and return it.

    Returns ``None`` when an alert with the same rule and key was raised within
    ``dedup_window``: that alert's ``last_seen_at``, ``occurrences`` and evidence are updated
    instead, and nothing new is delivered. The caller commits.
    """
    key = finding.key[:255]
    existing = session.scalar(
        select(Alert)
        .where(
            Alert.rule == finding.rule,
            Alert.key == key,
            Alert.created_at >= now - dedup_window,
        )
        .order_by(Alert.created_at.desc())
        .limit(1)
    )
    if existing is not None:
        existing.last_seen_at = now
        existing.occurrences += 1
        merged = sorted({*existing.evidence, *finding.evidence})
        existing.evidence = merged[-MAX_EVIDENCE:]
        return None
    alert = Alert(
        created_at=now,
        last_seen_at=now,
        rule=finding.rule,
        severity=finding.severity,
        key=key,
        summary=finding.summary[:500],
        evidence=list(finding.evidence),
        occurrences=1,
    )
    session.add(alert)
    session.flush()
    for channel in channels:
        session.add(AlertDelivery(alert_id=alert.id, channel=channel, next_attempt_at=now))
    log.warning(
        "alert_raised",
        alert_id=alert.id,
        rule=alert.rule,
        severity=alert.severity,
        alert_summary=alert.summary,
    )
    return alert


def alert_payload(alert: Alert, issuer: str) -> dict[str, Any]:
    """The JSON document every channel delivers for ``alert``."""
    return {
        "type": "echo_identity.alert",
        "issuer": issuer,
        "alert_id": alert.id,
        "rule": alert.rule,
        "severity": alert.severity,
        "key": alert.key,
        "summary": alert.summary,
        "evidence_event_ids": list(alert.evidence),
        "occurrences": alert.occurrences,
        "created_at": alert.created_at.isoformat(),
        "last_seen_at": alert.last_seen_at.isoformat(),
    }


def recent_alerts(session: Session, limit: int = 50) -> list[Alert]:
    return list(session.scalars(select(Alert).order_by(Alert.id.desc()).limit(limit)))
