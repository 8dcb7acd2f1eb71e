"""What the audit trail contributes to the security report (``echo_identity.reports``): SQL
aggregates over the events, the alerts and the still-open refusal windows of a time window.

Every number is a ``GROUP BY`` aggregate computed by the database; no event row is loaded into
Python. An aggregated refusal (``audit/refusals.py``) counts as ``1 + details.repeated``
occurrences (the same weight as :func:`echo_identity.audit.rules.weight`), and the repeats of
windows still open are added, so the report is exact before the worker closes them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import Date, Table, and_, case, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from echo_identity.audit.alert_models import Alert
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent, RefusalWindow

EVENTS = cast(Table, AuditEvent.__table__)
WINDOWS = cast(Table, RefusalWindow.__table__)
_OCCURRENCE = func.coalesce(EVENTS.c.details["repeated"].as_integer(), 1)
OCCURRENCES = func.sum(_OCCURRENCE)
TOP_IPS = 10
LOGIN_TYPES = (EventType.LOGIN_SUCCESS, EventType.LOGIN_FAILURE, EventType.LOGIN_LOCKED)
CLIENT_TYPES = {
    EventType.TOKEN_ISSUED: "tokens_issued",
    EventType.TOKEN_REFRESHED: "tokens_refreshed",
    EventType.VAULT_TOKEN_READ: "vault_reads",
    EventType.VAULT_TOKEN_DENIED: "vault_denied",
}
# Clean-up work recorded in the trail: event names ending like these count as clean-ups.
CLEANUP_SUFFIXES = (".expired", ".purged", ".pruned", ".cleaned")


@dataclass(frozen=True)
class LoginCounts:
    success: int
    failure: int
    locked: int  # sign-ins refused by the login rate limit (auth.login.locked)


@dataclass(frozen=True)
class DailyLogins:
    day: str  # YYYY-MM-DD (UTC)
    success: int
    failure: int
    locked: int


@dataclass(frozen=True)
class ClientActivity:
    client_id: str
    tokens_issued: int = 0
    tokens_refreshed: int = 0
    vault_reads: int = 0
    vault_denied: int = 0


@dataclass(frozen=True)
class AlertCount:
    rule: str
    severity: str
    count: int  # alerts raised in the window
    occurrences: int  # firings, including repeats folded into an alert by de-duplication


@dataclass(frozen=True)
class SourceIp:
    ip: str
    events: int
    failures: int


@dataclass(frozen=True)
class CleanupCount:
    event_type: str
    count: int


@dataclass(frozen=True)
class OpenRepeats:
    """Refusals counted in a still-open aggregation window beyond its first event."""

    event_type: str
    day: str  # the UTC day the window started
    ip: str | None
    count: int


class TrailAggregates:
    """The trail's aggregates over ``[since, until)`` on ``session`` (read only); each method
    is one section of the report, so a caller can tell its user which one is running."""

    def __init__(self, session: Session, since: datetime, until: datetime) -> None:
        self._session = session
        self._since, self._until = since, until
        self._window = and_(EVENTS.c.occurred_at >= since, EVENTS.c.occurred_at < until)
        self._open: list[OpenRepeats] | None = None

    def open_repeats(self) -> list[OpenRepeats]:
        """Refusals counted in aggregation windows that started in the window and are still
        open (their summary event is not written yet)."""
        if self._open is None:
            rows = self._session.execute(
                select(
                    WINDOWS.c.event_type,
                    WINDOWS.c.window_started_at,
                    WINDOWS.c.ip,
                    WINDOWS.c.count,
                ).where(
                    WINDOWS.c.count > 1,
                    WINDOWS.c.window_started_at >= self._since,
                    WINDOWS.c.window_started_at < self._until,
                )
            )
            self._open = [
                OpenRepeats(str(kind), _utc(started).date().isoformat(), ip, int(count) - 1)
                for kind, started, ip, count in rows
            ]
        return self._open

    def counts_by_type(self) -> dict[str, int]:
        """Occurrences per event type, open windows included."""
        rows = self._session.execute(
            select(EVENTS.c.event_type, OCCURRENCES)
            .where(self._window)
            .group_by(EVENTS.c.event_type)
        )
        counts = {str(event_type): int(count) for event_type, count in rows}
        for repeat in self.open_repeats():
            counts[repeat.event_type] = counts.get(repeat.event_type, 0) + repeat.count
        return counts

    def daily_logins(self) -> list[DailyLogins]:
        day = self._day().label("day")
        rows = self._session.execute(
            select(day, EVENTS.c.event_type, OCCURRENCES)
            .where(self._window, EVENTS.c.event_type.in_([str(t) for t in LOGIN_TYPES]))
            .group_by(day, EVENTS.c.event_type)
        )
        days: dict[str, dict[str, int]] = defaultdict(dict)
        for value, event_type, count in rows:
            key = value.isoformat() if isinstance(value, date) else str(value)
            days[key][str(event_type)] = int(count)
        for repeat in self.open_repeats():
            if repeat.event_type in LOGIN_TYPES:
                counts = days[repeat.day]
                counts[repeat.event_type] = counts.get(repeat.event_type, 0) + repeat.count
        return [
            DailyLogins(
                day=key,
                success=counts.get(EventType.LOGIN_SUCCESS, 0),
                failure=counts.get(EventType.LOGIN_FAILURE, 0),
                locked=counts.get(EventType.LOGIN_LOCKED, 0),
            )
            for key, counts in sorted(days.items())
        ]

    def clients(self) -> list[ClientActivity]:
        rows = self._session.execute(
            select(EVENTS.c.client_id, EVENTS.c.event_type, OCCURRENCES)
            .where(
                self._window,
                EVENTS.c.event_type.in_([str(t) for t in CLIENT_TYPES]),
                EVENTS.c.client_id.is_not(None),
            )
            .group_by(EVENTS.c.client_id, EVENTS.c.event_type)
        )
        clients: dict[str, dict[str, int]] = defaultdict(dict)
        for client_id, event_type, count in rows:
            clients[str(client_id)][CLIENT_TYPES[EventType(event_type)]] = int(count)
        activity = [ClientActivity(client_id, **counts) for client_id, counts in clients.items()]
        return sorted(activity, key=lambda a: (-(a.tokens_issued + a.vault_reads), a.client_id))

    def alerts(self) -> list[AlertCount]:
        rows = self._session.execute(
            select(Alert.rule, Alert.severity, func.count(), func.sum(Alert.occurrences))
            .where(Alert.created_at >= self._since, Alert.created_at < self._until)
            .group_by(Alert.rule, Alert.severity)
        )
        counts = [
            AlertCount(str(rule), str(severity), int(count), int(occurrences or count))
            for rule, severity, count, occurrences in rows
        ]
        return sorted(counts, key=lambda a: (-a.count, a.rule, a.severity))

    def top_ips(self) -> list[SourceIp]:
        total = OCCURRENCES.label("total")
        failures = func.sum(case((EVENTS.c.outcome == "failure", _OCCURRENCE), else_=0))
        rows = self._session.execute(
            select(EVENTS.c.ip, total, failures)
            .where(self._window, EVENTS.c.ip.is_not(None))
            .group_by(EVENTS.c.ip)
            .order_by(total.desc(), EVENTS.c.ip)
            .limit(TOP_IPS)
        )
        found = {str(ip): [int(count), int(failed or 0)] for ip, count, failed in rows}
        for repeat in self.open_repeats():  # every aggregated event is a refusal
            if repeat.ip:
                counts = found.setdefault(repeat.ip, [0, 0])
                counts[0] += repeat.count
                counts[1] += repeat.count
        ranked = sorted(found.items(), key=lambda item: (-item[1][0], item[0]))[:TOP_IPS]
        return [SourceIp(ip, total, failed) for ip, (total, failed) in ranked]

    def cleanup(self, by_type: dict[str, int]) -> list[CleanupCount]:
        """Rows cleaned up, by event type: a purge event carries its row count in
        ``details.count``; an event without one (``vault.token.expired``) stands for one row.
        ``by_type`` is :meth:`counts_by_type` (only the types it names are counted)."""
        kinds = [name for name in by_type if name.endswith(CLEANUP_SUFFIXES)]
        if not kinds:
            return []
        rows = self._session.execute(
            select(
                EVENTS.c.event_type,
                func.sum(func.coalesce(EVENTS.c.details["count"].as_integer(), 1)),
            )
            .where(self._window, EVENTS.c.event_type.in_(kinds))
            .group_by(EVENTS.c.event_type)
        )
        return [CleanupCount(str(kind), int(total)) for kind, total in sorted(rows)]

    def _day(self) -> ColumnElement[Any]:
        if self._session.get_bind().dialect.name == "postgresql":
            # Days are UTC days whatever the connection's TimeZone is.
            return sql_cast(func.timezone("UTC", EVENTS.c.occurred_at), Date)
        return func.date(EVENTS.c.occurred_at)  # SQLite stores UTC text


def login_counts(by_type: dict[str, int]) -> LoginCounts:
    """The sign-in totals out of :meth:`TrailAggregates.counts_by_type`."""
    return LoginCounts(
        success=by_type.get(EventType.LOGIN_SUCCESS, 0),
        failure=by_type.get(EventType.LOGIN_FAILURE, 0),
        locked=by_type.get(EventType.LOGIN_LOCKED, 0),
    )


def _utc(moment: datetime | str) -> datetime:
    # A TypeDecorator column read through Core on SQLite may come back as text.
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
