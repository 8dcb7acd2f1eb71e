"""The security report's aggregates, window parsing, and one content for JSON and HTML."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert

from echo_identity.audit.alert_models import Alert
from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database, utcnow
from echo_identity.idp.models import SigningKey
from echo_identity.keys.models import DataKey
from echo_identity.reports.html import horizontal_bars, render_report_html
from echo_identity.reports.security_report import (
    ReportPolicy,
    SecurityReport,
    SecurityReportBuilder,
)
from echo_identity.reports.window import parse_since
from echo_identity.vault.models import Connection, Provider
from tests.factories import create_user

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
EVENTS = cast(Table, AuditEvent.__table__)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("24h", NOW - timedelta(hours=24)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T10:00:00+02:00", datetime(2026, 11, 1, 8, tzinfo=UTC)),
    ],
)
def test_since_accepts_durations_and_iso_dates_in_utc(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7", "7y", "-1d", "2027-01-01"])
def test_since_rejects_garbage_and_the_future(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|future"):
        parse_since(text, NOW)


def event(moment: datetime, event_type: str, **fields: Any) -> dict[str, Any]:
    row = {
        "occurred_at": moment,
        "event_type": event_type,
        "outcome": "success",
        "severity": "info",
        "actor": None,
        "subject": None,
        "client_id": None,
        "ip": None,
        "user_agent": None,
        "request_id": None,
        "token_fingerprint": None,
        "details": {},
    }
    return {**row, **fields}


@pytest.fixture
def report(database: Database) -> SecurityReport:
    """A database with known events inside and outside a one-day window, alerts, keys and
    connections; the report over that window."""
    now = utcnow()
    inside, outside = now - timedelta(hours=2), now - timedelta(days=3)
    rows = [
        event(inside, "auth.login.success", ip="192.0.2.1"),
        event(inside, "auth.login.success", ip="192.0.2.1"),
        event(inside, "auth.login.failure", outcome="failure", ip="192.0.2.9"),
        event(inside, "auth.login.failure", outcome="failure", ip="192.0.2.9"),
        event(inside, "auth.login.failure", outcome="failure", ip="192.0.2.9"),
        event(inside, "auth.login.locked", outcome="failure", ip="192.0.2.9"),
        *[event(inside, "oauth.token.issued", client_id="app-a", ip="198.51.100.1")] * 4,
        event(inside, "oauth.token.refreshed", client_id="app-a"),
        *[event(inside, "vault.token.read", client_id="svc-b", ip="198.51.100.2")] * 2,
        event(inside, "vault.token.denied", outcome="failure", client_id="svc-b"),
        *[event(inside, "vault.token.expired", actor="worker")] * 3,
        event(inside, "oauth.code.purged", actor="worker", details={"count": 40}),
        event(inside, "oauth.code.purged", actor="worker", details={"count": 2}),
        event(outside, "oauth.code.purged", actor="worker", details={"count": 1000}),
        # Outside the window: must not be counted anywhere.
        *[event(outside, "auth.login.success", ip="203.0.113.5")] * 5,
        *[event(outside, "oauth.token.issued", client_id="app-a")] * 5,
    ]
    user = create_user(database)
    with database.transaction() as session:
        session.execute(insert(EVENTS), rows)
        session.execute(
            insert(cast(Table, Alert.__table__)),
            [
                alert(inside, "login_failures", "warning", occurrences=3),
                alert(inside, "login_failures", "warning"),
                alert(inside, "refresh_token_reuse", "high"),
                alert(outside, "password_spraying", "high"),
            ],
        )
        for alg, age in (("RS256", 120), ("ES256", 10)):
            session.add(
                SigningKey(
                    kid=f"kid-{alg}",
                    alg=alg,
                    public_jwk={},
                    private_key_ciphertext=b"x",
                    created_at=now - timedelta(days=age),
                    activates_at=now - timedelta(days=age),
                )
            )
        for number, age in enumerate((400, 10, 500)):
            session.add(
                DataKey(
                    id=f"dek{number}",
                    owner=f"user:{number}",
                    kek_id="local:00112233aabbccdd",
                    wrapped_key=b"x",
                    created_at=now - timedelta(days=age),
                )
            )
        provider = Provider(
            name="github",
            authorize_url="https://github.test/authorize",
            token_url="https://github.test/token",
            client_id="gh",
            client_secret_ciphertext=b"x",
        )
        session.add(provider)
        session.flush()
        session.add(Connection(user_id=user.id, provider_id=provider.id, status="needs_reauth"))
    with database.read_session() as session:
        return SecurityReportBuilder(session, ReportPolicy(90, 365)).build(
            now - timedelta(days=1), now
        )


def alert(moment: datetime, rule: str, severity: str, occurrences: int = 1) -> dict[str, Any]:
    return {
        "created_at": moment,
        "last_seen_at": moment,
        "rule": rule,
        "severity": severity,
        "key": f"{rule}-{occurrences}-{moment.timestamp()}",
        "summary": rule,
        "evidence": [],
        "occurrences": occurrences,
    }


def test_counts_only_events_inside_the_window(report: SecurityReport) -> None:
    assert report.total_events == 19  # the 1,000-row purge outside is not counted either
    assert (report.logins.success, report.logins.failure, report.logins.locked) == (2, 3, 1)
    [day] = report.daily_logins
    assert (day.success, day.failure, day.locked) == (2, 3, 1)


def test_token_issuance_and_vault_access_are_grouped_per_client(report: SecurityReport) -> None:
    clients = {c.client_id: c for c in report.clients}
    assert set(clients) == {"app-a", "svc-b"}
    assert (clients["app-a"].tokens_issued, clients["app-a"].tokens_refreshed) == (4, 1)
    assert (clients["svc-b"].vault_reads, clients["svc-b"].vault_denied) == (2, 1)


def test_alerts_are_counted_by_rule_and_severity_within_the_window(
    report: SecurityReport,
) -> None:
    found = {(a.rule, a.severity): (a.count, a.occurrences) for a in report.alerts}
    assert found == {("login_failures", "warning"): (2, 4), ("refresh_token_reuse", "high"): (1, 1)}


def test_top_ips_rank_by_events_and_count_failures(report: SecurityReport) -> None:
    ranked = [(ip.ip, ip.events, ip.failures) for ip in report.top_ips]
    assert ranked == [
        ("192.0.2.9", 4, 4),
        ("198.51.100.1", 4, 0),
        ("192.0.2.1", 2, 0),
        ("198.51.100.2", 2, 0),
    ]


def test_key_ages_are_measured_against_the_rotation_policy(report: SecurityReport) -> None:
    keys = {k.alg: k for k in report.signing_keys}
    assert keys["RS256"].rotation_due
    assert keys["RS256"].age_days == 120
    assert not keys["ES256"].rotation_due
    [wrapped] = report.data_keys
    assert (wrapped.current_keys, wrapped.over_policy, wrapped.oldest_age_days) == (3, 2, 500)


def test_connections_needing_reauthentication_and_cleanups_are_reported(
    report: SecurityReport,
) -> None:
    assert report.needs_reauth_total == 1
    assert report.needs_reauth[0].provider == "github"
    # Purge events carry their row count; an expired vault token is one event per row.
    assert [(c.event_type, c.count) for c in report.cleanup] == [
        ("oauth.code.purged", 42),
        ("vault.token.expired", 3),
    ]


def leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    return [str(value)]


def test_html_and_json_carry_the_same_content(report: SecurityReport) -> None:
    data = json.loads(json.dumps(report.to_dict()))
    page = html.unescape(render_report_html(report))
    missing = [leaf for leaf in leaves(data) if leaf not in page]
    assert missing == []
    assert "<svg" in page
    assert " style=" not in page
    assert "<script" not in page


def test_bar_lengths_are_proportional_to_the_values() -> None:
    chart = horizontal_bars(
        "t", [("a", [("tokens", 10)]), ("b", [("tokens", 5)])], {"tokens": "#000"}
    )
    first, second = chart.bars
    assert first.width == pytest.approx(2 * second.width)
    assert not horizontal_bars("t", [], {}).bars


def test_progress_is_told_each_section_in_order(database: Database) -> None:
    sections: list[str] = []
    with database.read_session() as session:
        SecurityReportBuilder(session, ReportPolicy()).build(
            utcnow() - timedelta(days=1), progress=sections.append
        )
    assert sections == [
        "event counts",
        "sign-ins per day",
        "clients",
        "source IPs",
        "alerts, connections and keys",
    ]
