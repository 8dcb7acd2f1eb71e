"""The detection pass over a real database: cursor, history-backed rules, de-duplication."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from echo_identity.audit.alert_models import Alert, AlertDelivery, DetectionCursor
from echo_identity.audit.detection import SETTLE, DetectionPolicy, run_detection
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent
from echo_identity.config import Settings
from echo_identity.db import Database, utcnow
from tests.support.environment import app_environment, settings_for


def monitoring_settings(tmp_path: Path, database_url: str, **env: str) -> Settings:
    return settings_for(
        app_environment(
            tmp_path / "var",
            database_url,
            ECHO_ALERT_WEBHOOK_URL="http://127.0.0.1:9/hook",
            ECHO_ALERT_WEBHOOK_SECRET="s3cr3t-" * 6,
            **env,
        )
    )


def add(database: Database, event_type: EventType, at: datetime, **fields: Any) -> None:
    with database.transaction() as session:
        session.add(
            AuditEvent(
                occurred_at=at,
                event_type=str(event_type),
                outcome=fields.pop("outcome", "success"),
                severity=fields.pop("severity", "info"),
                details=fields.pop("details", {}),
                **fields,
            )
        )


def settled(now: datetime) -> datetime:
    """A pass a little later: on PostgreSQL, events younger than SETTLE wait for the next."""
    return now + SETTLE + timedelta(seconds=1)


def alerts(database: Database) -> list[Alert]:
    with database.session() as session:
        return list(session.scalars(select(Alert).order_by(Alert.id)))


def test_vault_read_from_a_new_network_alerts_once_and_known_networks_do_not(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    settings = monitoring_settings(tmp_path, database_url)
    now = utcnow()
    add(
        database,
        EventType.VAULT_TOKEN_READ,
        now - timedelta(days=3),
        client_id="billing",
        ip="203.0.113.4",
    )
    add(
        database,
        EventType.VAULT_TOKEN_READ,
        now - timedelta(days=2),
        client_id="billing",
        ip="203.0.113.9",
    )
    run_detection(database, DetectionPolicy.from_settings(settings), now=settled(now))
    assert alerts(database) == []  # history alone raises nothing

    add(database, EventType.VAULT_TOKEN_READ, now, client_id="billing", ip="203.0.113.77")
    run_detection(database, DetectionPolicy.from_settings(settings), now=settled(now))
    assert alerts(database) == []  # same /24 as before

    add(database, EventType.VAULT_TOKEN_READ, now, client_id="billing", ip="192.0.2.10")
    add(database, EventType.VAULT_TOKEN_READ, now, client_id="billing", ip="192.0.2.11")
    result = run_detection(database, DetectionPolicy.from_settings(settings), now=settled(now))
    assert result.raised == 1
    [alert] = alerts(database)
    assert (alert.rule, alert.key) == ("vault_new_ip_prefix", "billing:192.0.2.0/24")
    with database.session() as session:
        assert [d.channel for d in session.scalars(select(AlertDelivery))] == ["webhook"]


def test_reads_far_above_the_clients_own_baseline_alert(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    settings = monitoring_settings(tmp_path, database_url, ECHO_DETECT_RATE_MIN_READS="20")
    now = utcnow()
    for day in range(1, 7):  # a quiet client: 4 reads a day
        for hour in (9, 11, 14, 16):
            add(
                database,
                EventType.VAULT_TOKEN_READ,
                now - timedelta(days=day, hours=hour),
                client_id="quiet",
                ip="203.0.113.4",
            )
    run_detection(database, DetectionPolicy.from_settings(settings), now=settled(now))
    for i in range(25):
        add(
            database,
            EventType.VAULT_TOKEN_READ,
            now - timedelta(minutes=30 - i),
            client_id="quiet",
            ip="203.0.113.4",
        )
    run_detection(database, DetectionPolicy.from_settings(settings), now=settled(now))
    assert [a.rule for a in alerts(database)] == ["vault_read_spike"]


def test_invalid_grant_refresh_and_token_reuse_alert_high(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    settings = monitoring_settings(tmp_path, database_url)
    now = utcnow()
    add(
        database,
        EventType.VAULT_REFRESH_FAILED,
        now,
        outcome="failure",
        severity="high",
        subject="u_abc",
        details={"provider": "github", "error": "invalid_grant"},
    )
    add(
        database,
        EventType.VAULT_REFRESH_FAILED,
        now,
        outcome="failure",
        severity="warning",
        subject="u_abc",
        details={"provider": "github", "error": "upstream_unavailable"},
    )
    add(
        database,
        EventType.TOKEN_REUSE_DETECTED,
        now,
        outcome="failure",
        client_id="web",
        details={"family_id": "f1"},
    )
    add(
        database,
        EventType.CODE_REUSE_DETECTED,
        now,
        outcome="failure",
        client_id="web",
        details={"family_id": "f2"},
    )
    run_detection(database, DetectionPolicy.from_settings(settings), now=settled(now))
    found = {(a.rule, a.severity) for a in alerts(database)}
    assert found == {
        ("vault_refresh_invalid_grant", "high"),
        ("refresh_token_reuse", "high"),
        ("authorization_code_reuse", "high"),
    }


def test_the_cursor_means_each_event_is_evaluated_once(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    settings = monitoring_settings(tmp_path, database_url, ECHO_ALERT_DEDUP_WINDOW="0")
    now = utcnow()
    add(
        database,
        EventType.TOKEN_REUSE_DETECTED,
        now,
        outcome="failure",
        client_id="web",
        details={"family_id": "f1"},
    )
    assert (
        run_detection(database, DetectionPolicy.from_settings(settings), now=settled(now)).raised
        == 1
    )
    assert (
        run_detection(
            database, DetectionPolicy.from_settings(settings), now=now + timedelta(hours=2)
        ).evaluated
        == 0
    )
    assert len(alerts(database)) == 1
    with database.session() as session:
        cursor = session.get(DetectionCursor, "rules")
        assert cursor is not None
        assert cursor.last_event_id > 0


def test_repeated_failures_across_passes_keep_one_alert_within_the_window(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    settings = monitoring_settings(tmp_path, database_url)
    now = utcnow()
    for i in range(5):
        add(
            database,
            EventType.LOGIN_FAILURE,
            now - timedelta(minutes=5 - i),
            outcome="failure",
            ip="198.51.100.1",
            details={"typed_name": "n_carol"},
        )
    run_detection(database, DetectionPolicy.from_settings(settings), now=settled(now))
    add(
        database,
        EventType.LOGIN_FAILURE,
        now,
        outcome="failure",
        ip="198.51.100.1",
        details={"typed_name": "n_carol"},
    )
    run_detection(database, DetectionPolicy.from_settings(settings), now=settled(now))
    [alert] = alerts(database)
    assert alert.rule == "login_failures"
    assert alert.occurrences == 2
    assert len(alert.evidence) == 6
