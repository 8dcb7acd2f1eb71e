"""The security report: one typed document built from the queries each domain owns.

The audit trail gives the activity of the window (``audit.report_queries``), the identity
provider the signing-key ages (``idp.report_queries``), the vault the connections waiting for
re-authentication (``vault.report_queries``), key management the data-key ages
(``keys.report_queries``). Every number is a SQL aggregate, so a report over a million events
costs a handful of index or table scans (``benchmarks/audit_report.py``). The JSON and HTML
renderings are both built from :class:`SecurityReport` (``to_dict`` and
:mod:`echo_identity.reports.html`), so they carry the same content.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from echo_identity.audit.report_queries import (
    AlertCount,
    CleanupCount,
    ClientActivity,
    DailyLogins,
    LoginCounts,
    SourceIp,
    TrailAggregates,
    login_counts,
)
from echo_identity.config import Settings
from echo_identity.db import utcnow
from echo_identity.idp.report_queries import SigningKeyAge, signing_key_ages
from echo_identity.keys.report_queries import DataKeyAge, data_key_ages
from echo_identity.vault.report_queries import ReauthConnection, connections_needing_reauth


@dataclass(frozen=True)
class ReportPolicy:
    """Key rotation policy the report measures key ages against (settings)."""

    signing_key_max_age_days: int = 90
    data_key_max_age_days: int = 365

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportPolicy:
        return cls(settings.signing_key_max_age_days, settings.data_key_max_age_days)


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
        trail = TrailAggregates(self._session, since, until)
        step = progress or (lambda _section: None)
        step("event counts")
        by_type = trail.counts_by_type()
        step("sign-ins per day")
        daily = trail.daily_logins()
        step("clients")
        clients = trail.clients()
        step("source IPs")
        top_ips = trail.top_ips()
        step("alerts, connections and keys")
        reauth_total, reauth = connections_needing_reauth(self._session)
        policy = self._policy
        return SecurityReport(
            generated_at=_iso(now),
            since=_iso(since),
            until=_iso(until),
            total_events=sum(by_type.values()),
            logins=login_counts(by_type),
            daily_logins=daily,
            clients=clients,
            alerts=trail.alerts(),
            top_ips=top_ips,
            needs_reauth_total=reauth_total,
            needs_reauth=reauth,
            signing_key_max_age_days=policy.signing_key_max_age_days,
            signing_keys=signing_key_ages(self._session, now, policy.signing_key_max_age_days),
            data_key_max_age_days=policy.data_key_max_age_days,
            data_keys=data_key_ages(self._session, now, policy.data_key_max_age_days),
            cleanup=trail.cleanup(by_type),
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
