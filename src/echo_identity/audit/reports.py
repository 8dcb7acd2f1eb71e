"""Security reports: SQL aggregates over the audit trail and key tables → one typed report.

Every number is a ``GROUP BY`` aggregate computed by the database; no event row is loaded into
Python, so a report over a million events costs a handful of index or table scans
(``benchmarks/audit_report.py``). The JSON and HTML renderings are both built from
:class:`SecurityReport` (``to_dict`` and ``audit/report_html.py``), so they carry the same content.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Date, Table, and_, case, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from echo_identity.audit.alert_models import Alert
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent, RefusalWindow
from echo_identity.config import Settings
from echo_identity.db import utcnow
from echo_identity.idp.models import SigningKey
from echo_identity.vault.models import Connection, DataKey, Provider

EVENTS = cast(Table, AuditEvent.__table__)
WINDOWS = cast(Table, RefusalWindow.__table__)
# How many occurrences an event stands for: the summary of an aggregated refusal window
# (audit/refusals.py) carries the repeats after the window's first event in details.repeated;
# every other event is one occurrence (the same weight as audit.rules.weight).
_OCCURRENCE = func.coalesce(EVENTS.c.details["repeated"].as_integer(), 1)
OCCURRENCES = func.sum(_OCCURRENCE)
TOP_IPS = 10
MAX_LISTED_CONNECTIONS = 100
LOGIN_TYPES = (EventType.LOGIN_SUCCESS, EventType.LOGIN_FAILURE, EventType.LOGIN_LOCKED)
CLIENT_TYPES = {
    EventType.TOKEN_ISSUED: "tokens_issued",
    EventType.TOKEN_REFRESHED: "tokens_refreshed",
    EventType.VAULT_TOKEN_READ: "vault_reads",
    EventType.VAULT_TOKEN_DENIED: "vault_denied",
}
# Clean-up work recorded in the trail: event names ending like these count as clean-ups.
CLEANUP_SUFFIXES = (".expired", ".purged", ".pruned", ".cleaned")
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """The start of a report window: a duration back from ``now`` (``30m``, ``24h``, ``7d``,
    ``2w``) or an ISO 8601 date/time (UTC when no offset is given).

    Raises:
        ValueError: ``text`` is neither, or lies after ``now``.
    """
    match = _DURATION.match(text)
    if match:
        since = now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"{text!r} is not a duration (30m, 24h, 7d, 2w) or an ISO 8601 date"
            ) from None
        since = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if since > now:
        raise ValueError(f"{text!r} lies in the future")
    return since.astimezone(UTC)


@dataclass(frozen=True)
class ReportPolicy:
    """Key rotation policy the report measures key ages against (settings)."""

    signing_key_max_age_days: int = 90
    data_key_max_age_days: int = 365

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportPolicy:
        return cls(settings.signing_key_max_age_days, settings.data_key_max_age_days)


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
class ReauthConnection:
    connection_id: int
    provider: str
    since: str  # when the connection last changed (it turned needs_reauth then or before)
    refresh_failures: int


@dataclass(frozen=True)
class SigningKeyAge:
    kid: str
    alg: str
    created_at: str
    age_days: int
    state: str  # pending | signing | retiring
    rotation_due: bool  # the signing key of this algorithm is older than the policy


@dataclass(frozen=True)
class DataKeyAge:
    kek_id: str
    current_keys: int  # data keys that still encrypt (not retired)
    oldest_age_days: int
    over_policy: int  # current keys older than the policy


@dataclass(frozen=True)
class CleanupCount:
    event_type: str
    count: int


@dataclass(frozen=True)
class SecurityReport:
    generated_at: str
    since: str
    until: str
    total_events: int
    logins: LoginCounts
    daily_logins: list[DailyLogins]
    clients: list[ClientActivity]
    alerts: list[AlertCount]
    top_ips: list[SourceIp]
    needs_reauth_total: int
    needs_reauth: list[ReauthConnection]
    signing_key_max_age_days: int
    signing_keys: list[SigningKeyAge]
    data_key_max_age_days: int
    data_keys: list[DataKeyAge]
    cleanup: list[CleanupCount]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the ``--format json`` output and the HTML's input)."""
        return asdict(self)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _age_days(moment: datetime, now: datetime) -> int:
    return max(0, (now - moment).days)


@dataclass(frozen=True)
class OpenRepeats:
    """Refusals counted in a still-open aggregation window beyond its first event."""

    event_type: str
    day: str  # the UTC day the window started
    ip: str | None
    count: int


class SecurityReportBuilder:
    """Builds a :class:`SecurityReport` from the database behind ``session`` (read only)."""

    def __init__(self, session: Session, policy: ReportPolicy) -> None:
        self._session = session
        self._policy = policy

    def build(
        self,
        since: datetime,
        until: datetime | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> SecurityReport:
        """The report for events in ``[since, until)`` (``until`` defaults to now); key ages
        and connections are their state now. ``progress`` is told each section's name."""
        now = utcnow()
        until = until or now
        window = and_(EVENTS.c.occurred_at >= since, EVENTS.c.occurred_at < until)
        step = progress or (lambda _section: None)
        step("event counts")
        open_repeats = self._open_repeats(since, until)
        by_type = self._counts_by_type(window)
        for repeat in open_repeats:
            by_type[repeat.event_type] = by_type.get(repeat.event_type, 0) + repeat.count
        step("sign-ins per day")
        daily = self._daily_logins(window, open_repeats)
        step("clients")
        clients = self._clients(window)
        step("source IPs")
        top_ips = self._top_ips(window, open_repeats)
        step("alerts, connections and keys")
        reauth_total, reauth = self._needs_reauth()
        return SecurityReport(
            generated_at=_iso(now),
            since=_iso(since),
            until=_iso(until),
            total_events=sum(by_type.values()),
            logins=LoginCounts(
                success=by_type.get(EventType.LOGIN_SUCCESS, 0),
                failure=by_type.get(EventType.LOGIN_FAILURE, 0),
                locked=by_type.get(EventType.LOGIN_LOCKED, 0),
            ),
            daily_logins=daily,
            clients=clients,
            alerts=self._alerts(since, until),
            top_ips=top_ips,
            needs_reauth_total=reauth_total,
            needs_reauth=reauth,
            signing_key_max_age_days=self._policy.signing_key_max_age_days,
            signing_keys=self._signing_keys(now),
            data_key_max_age_days=self._policy.data_key_max_age_days,
            data_keys=self._data_keys(now),
            cleanup=self._cleanup(window, by_type),
        )

    def _cleanup(self, window: ColumnElement[bool], by_type: dict[str, int]) -> list[CleanupCount]:
        """Rows cleaned up, by event type: a purge event carries its row count in
        ``details.count``; an event without one (``vault.token.expired``) stands for one row."""
        kinds = [name for name in by_type if name.endswith(CLEANUP_SUFFIXES)]
        if not kinds:
            return []
        rows = self._session.execute(
            select(
                EVENTS.c.event_type,
                func.sum(func.coalesce(EVENTS.c.details["count"].as_integer(), 1)),
            )
            .where(window, EVENTS.c.event_type.in_(kinds))
            .group_by(EVENTS.c.event_type)
        )
        return [CleanupCount(str(kind), int(total)) for kind, total in sorted(rows)]

    def _counts_by_type(self, window: ColumnElement[bool]) -> dict[str, int]:
        rows = self._session.execute(
            select(EVENTS.c.event_type, OCCURRENCES).where(window).group_by(EVENTS.c.event_type)
        )
        return {str(event_type): int(count) for event_type, count in rows}

    def _day(self) -> ColumnElement[Any]:
        if self._session.get_bind().dialect.name == "postgresql":
            # Days are UTC days whatever the connection's TimeZone is.
            return sql_cast(func.timezone("UTC", EVENTS.c.occurred_at), Date)
        return func.date(EVENTS.c.occurred_at)  # SQLite stores UTC text

    def _open_repeats(self, since: datetime, until: datetime) -> list[OpenRepeats]:
        """Refusals counted in aggregation windows that are still open (their summary event is
        not written yet), so the report is exact before the worker closes them."""
        rows = self._session.execute(
            select(
                WINDOWS.c.event_type, WINDOWS.c.window_started_at, WINDOWS.c.ip, WINDOWS.c.count
            ).where(
                WINDOWS.c.count > 1,
                WINDOWS.c.window_started_at >= since,
                WINDOWS.c.window_started_at < until,
            )
        )
        return [
            OpenRepeats(str(kind), _utc(started).date().isoformat(), ip, int(count) - 1)
            for kind, started, ip, count in rows
        ]

    def _daily_logins(
        self, window: ColumnElement[bool], open_repeats: list[OpenRepeats]
    ) -> list[DailyLogins]:
        day = self._day().label("day")
        rows = self._session.execute(
            select(day, EVENTS.c.event_type, OCCURRENCES)
            .where(window, EVENTS.c.event_type.in_([str(t) for t in LOGIN_TYPES]))
            .group_by(day, EVENTS.c.event_type)
        )
        days: dict[str, dict[str, int]] = defaultdict(dict)
        for value, event_type, count in rows:
            key = value.isoformat() if isinstance(value, date) else str(value)
            days[key][str(event_type)] = int(count)
        for repeat in open_repeats:
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

    def _clients(self, window: ColumnElement[bool]) -> list[ClientActivity]:
        rows = self._session.execute(
            select(EVENTS.c.client_id, EVENTS.c.event_type, OCCURRENCES)
            .where(
                window,
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

    def _alerts(self, since: datetime, until: datetime) -> list[AlertCount]:
        rows = self._session.execute(
            select(Alert.rule, Alert.severity, func.count(), func.sum(Alert.occurrences))
            .where(Alert.created_at >= since, Alert.created_at < until)
            .group_by(Alert.rule, Alert.severity)
        )
        counts = [
            AlertCount(str(rule), str(severity), int(count), int(occurrences or count))
            for rule, severity, count, occurrences in rows
        ]
        return sorted(counts, key=lambda a: (-a.count, a.rule, a.severity))

    def _top_ips(
        self, window: ColumnElement[bool], open_repeats: list[OpenRepeats]
    ) -> list[SourceIp]:
        total = OCCURRENCES.label("total")
        failures = func.sum(case((EVENTS.c.outcome == "failure", _OCCURRENCE), else_=0))
        rows = self._session.execute(
            select(EVENTS.c.ip, total, failures)
            .where(window, EVENTS.c.ip.is_not(None))
            .group_by(EVENTS.c.ip)
            .order_by(total.desc(), EVENTS.c.ip)
            .limit(TOP_IPS)
        )
        found = {str(ip): [int(count), int(failed or 0)] for ip, count, failed in rows}
        for repeat in open_repeats:  # every aggregated event is a refusal
            if repeat.ip:
                counts = found.setdefault(repeat.ip, [0, 0])
                counts[0] += repeat.count
                counts[1] += repeat.count
        ranked = sorted(found.items(), key=lambda item: (-item[1][0], item[0]))[:TOP_IPS]
        return [SourceIp(ip, total, failed) for ip, (total, failed) in ranked]

    def _needs_reauth(self) -> tuple[int, list[ReauthConnection]]:
        waiting = Connection.status == "needs_reauth"
        total = self._session.scalar(select(func.count()).select_from(Connection).where(waiting))
        rows = self._session.execute(
            select(Connection.id, Provider.name, Connection.updated_at, Connection.refresh_failures)
            .join(Provider, Provider.id == Connection.provider_id)
            .where(waiting)
            .order_by(Connection.updated_at, Connection.id)
            .limit(MAX_LISTED_CONNECTIONS)
        )
        listed = [
            ReauthConnection(int(cid), str(name), _iso(updated), int(failures or 0))
            for cid, name, updated, failures in rows
        ]
        return int(total or 0), listed

    def _signing_keys(self, now: datetime) -> list[SigningKeyAge]:
        keys = list(self._session.scalars(select(SigningKey).order_by(SigningKey.alg)))
        limit = timedelta(days=self._policy.signing_key_max_age_days)
        signing: dict[str, SigningKey] = {}
        for key in keys:
            current = signing.get(key.alg)
            if key.activates_at <= now and (
                current is None
                or (key.activates_at, key.created_at) > (current.activates_at, current.created_at)
            ):
                signing[key.alg] = key
        result = []
        for key in keys:
            active = signing.get(key.alg)
            state = (
                "pending" if key.activates_at > now else "signing" if key is active else "retiring"
            )
            result.append(
                SigningKeyAge(
                    kid=key.kid,
                    alg=key.alg,
                    created_at=_iso(key.created_at),
                    age_days=_age_days(key.created_at, now),
                    state=state,
                    rotation_due=active is not None and now - active.created_at > limit,
                )
            )
        return sorted(result, key=lambda k: (k.alg, k.created_at))

    def _data_keys(self, now: datetime) -> list[DataKeyAge]:
        cutoff = now - timedelta(days=self._policy.data_key_max_age_days)
        rows = self._session.execute(
            select(
                DataKey.kek_id,
                func.count(),
                func.min(DataKey.created_at),
                func.sum(case((DataKey.created_at < cutoff, 1), else_=0)),
            )
            .where(DataKey.retired_at.is_(None))
            .group_by(DataKey.kek_id)
            .order_by(DataKey.kek_id)
        )
        return [
            DataKeyAge(str(kek_id), int(count), _oldest_days(oldest, now), int(over or 0))
            for kek_id, count, oldest, over in rows
        ]


def _utc(moment: datetime | str) -> datetime:
    # A TypeDecorator column read through Core on SQLite may come back as text.
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _oldest_days(oldest: datetime | str | None, now: datetime) -> int:
    # MIN() over a TypeDecorator column loses the type on SQLite: parse the stored text.
    if oldest is None:
        return 0
    if isinstance(oldest, str):
        oldest = datetime.fromisoformat(oldest)
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return _age_days(oldest, now)
