"""The detection pass: evaluate the rules over audit events recorded since the last pass.

A cursor row (``detection_cursors``) holds the id of the last event evaluated. Each pass loads
the newer events, the older events the sliding-window rules still need (the longest rule
window before the first new event), and per-client history for the new-prefix and rate
rules, runs :func:`echo_identity.audit.rules.evaluate`, raises alerts for findings that rest
on at least one new event, and moves the cursor — all in one transaction, so two workers
never evaluate the same events (the cursor row is locked on PostgreSQL; SQLite has one writer).

On PostgreSQL ids are handed out before commit, so a pass only takes events older than
:data:`SETTLE` to let concurrent transactions commit first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from echo_identity.audit.alert_models import DetectionCursor
from echo_identity.audit.alerts import raise_alert
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent
from echo_identity.audit.records import EventRecord
from echo_identity.audit.rules import (
    History,
    Thresholds,
    evaluate,
    ip_prefix,
)
from echo_identity.business_hours import BusinessHours
from echo_identity.config import Settings
from echo_identity.db import Database, utcnow

CURSOR = "rules"
BATCH = 5000
SETTLE = timedelta(seconds=2)
_WINDOW_TYPES = [
    str(EventType.LOGIN_FAILURE),
    str(EventType.VAULT_TOKEN_DENIED),
    str(EventType.VAULT_TOKEN_READ),
]


@dataclass(frozen=True)
class DetectionResult:
    evaluated: int
    raised: int
    findings: int


@dataclass(frozen=True)
class DetectionPolicy:
    """What the rules are evaluated with: the ``ECHO_DETECT_*``, ``ECHO_BUSINESS_*`` and
    alert settings as objects, built once (:meth:`from_settings`) at wiring."""

    thresholds: Thresholds
    business_hours: BusinessHours | None
    channels: tuple[str, ...]  # where a raised alert is to be delivered
    dedup_window: timedelta
    new_prefix_days: int
    rate_baseline_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectionPolicy:
        """Raises ``ValueError`` for garbled business hours (``load_settings`` refuses them)."""
        return cls(
            thresholds=Thresholds(
                login_failures=settings.detect_login_failures,
                login_window=timedelta(seconds=settings.detect_login_window),
                spray_accounts=settings.detect_spray_accounts,
                spray_window=timedelta(seconds=settings.detect_spray_window),
                vault_denials=settings.detect_vault_denials,
                vault_denial_window=timedelta(seconds=settings.detect_vault_denial_window),
                rate_factor=settings.detect_rate_factor,
                rate_min_reads=settings.detect_rate_min_reads,
            ),
            business_hours=BusinessHours.parse(
                settings.business_hours, settings.business_days, settings.business_timezone
            ),
            channels=tuple(alert_channels(settings)),
            dedup_window=timedelta(seconds=settings.alert_dedup_window),
            new_prefix_days=settings.detect_new_prefix_days,
            rate_baseline_days=settings.detect_rate_baseline_days,
        )


def alert_channels(settings: Settings) -> list[str]:
    """The delivery channels configured in ``settings``, in a stable order."""
    channels = []
    if settings.alert_webhook_url:
        channels.append("webhook")
    if settings.alert_smtp_host and settings.alert_smtp_to:
        channels.append("email")
    if settings.alert_syslog_address:
        channels.append("syslog")
    return channels


def to_record(row: AuditEvent) -> EventRecord:
    return EventRecord(
        id=row.id,
        occurred_at=row.occurred_at,
        event_type=row.event_type,
        outcome=row.outcome,
        severity=row.severity,
        actor=row.actor,
        subject=row.subject,
        client_id=row.client_id,
        ip=row.ip,
        user_agent=row.user_agent,
        request_id=row.request_id,
        token_fingerprint=row.token_fingerprint,
        details=dict(row.details or {}),
    )


def _cursor(session: Session, dialect: str) -> DetectionCursor:
    statement = select(DetectionCursor).where(DetectionCursor.name == CURSOR)
    if dialect == "postgresql":
        statement = statement.with_for_update()
    cursor = session.scalar(statement)
    if cursor is None:
        cursor = DetectionCursor(name=CURSOR, last_event_id=0)
        session.add(cursor)
        session.flush()
    return cursor


def _history(
    session: Session,
    new: list[EventRecord],
    before_id: int,
    policy: DetectionPolicy,
    now: datetime,
) -> History:
    reads = [e for e in new if e.event_type == str(EventType.VAULT_TOKEN_READ) and e.client_id]
    clients = sorted({str(e.client_id) for e in reads})
    if not clients:
        return History({}, {})
    read = str(EventType.VAULT_TOKEN_READ)
    since = now - timedelta(days=policy.new_prefix_days)
    known: dict[str, set[str]] = {}
    for client_id, ip in session.execute(
        select(AuditEvent.client_id, AuditEvent.ip)
        .where(
            AuditEvent.event_type == read,
            AuditEvent.client_id.in_(clients),
            AuditEvent.id <= before_id,
            AuditEvent.occurred_at >= since,
        )
        .distinct()
    ):
        prefixes = known.setdefault(str(client_id), set())
        prefix = ip_prefix(ip)
        if prefix:
            prefixes.add(prefix)
    # The baseline ends an hour before the first new read, so a burst does not raise it.
    baseline_end = min(e.occurred_at for e in reads) - timedelta(hours=1)
    days = policy.rate_baseline_days
    baseline: dict[str, float] = {}
    for client_id, count in session.execute(
        select(AuditEvent.client_id, func.count())
        .where(
            AuditEvent.event_type == read,
            AuditEvent.client_id.in_(clients),
            AuditEvent.occurred_at >= baseline_end - timedelta(days=days),
            AuditEvent.occurred_at < baseline_end,
        )
        .group_by(AuditEvent.client_id)
    ):
        baseline[str(client_id)] = int(count) / (days * 24)
    return History(known, baseline)


def run_detection(
    database: Database, policy: DetectionPolicy, now: datetime | None = None
) -> DetectionResult:
    """Evaluate the rules over events recorded since the last pass and raise alerts, in one
    transaction. Returns what was evaluated and raised; raises database errors (the cursor
    does not move then, so the next pass retries the same events)."""
    now = now or utcnow()
    limits = policy.thresholds
    settle = SETTLE if database.dialect == "postgresql" else timedelta(0)
    with database.transaction() as session:
        cursor = _cursor(session, database.dialect)
        start = cursor.last_event_id
        rows = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.id > start, AuditEvent.occurred_at <= now - settle)
                .order_by(AuditEvent.id)
                .limit(BATCH)
            )
        )
        if not rows:
            return DetectionResult(0, 0, 0)
        new = [to_record(row) for row in rows]
        earliest = min(e.occurred_at for e in new) - limits.lookback
        context = [
            to_record(row)
            for row in session.scalars(
                select(AuditEvent).where(
                    AuditEvent.id <= start,
                    AuditEvent.occurred_at >= earliest,
                    AuditEvent.event_type.in_(_WINDOW_TYPES),
                )
            )
        ]
        events = sorted([*context, *new], key=lambda e: (e.occurred_at, e.id))
        history = _history(session, new, start, policy, now)
        findings = [
            finding
            for finding in evaluate(events, limits, history, policy.business_hours)
            if max(finding.evidence) > start
        ]
        raised = 0
        for finding in findings:
            alert = raise_alert(
                session,
                finding,
                now=now,
                dedup_window=policy.dedup_window,
                channels=policy.channels,
            )
            raised += alert is not None
        cursor.last_event_id = rows[-1].id
    return DetectionResult(len(new), raised, len(findings))
