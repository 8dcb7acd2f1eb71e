"""Audit events map onto OCSF Authentication (3002) and API Activity (6003)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from echo_identity.audit.events import EventType
from echo_identity.audit.ocsf import to_ocsf
from echo_identity.audit.records import EventRecord

WHEN = datetime(2026, 11, 22, 9, 30, 0, 123000, tzinfo=UTC)


def record(event_type: EventType, **fields: object) -> EventRecord:
    defaults: dict[str, object] = {
        "id": 7,
        "occurred_at": WHEN,
        "event_type": str(event_type),
        "ip": "198.51.100.7",
        "user_agent": "Mozilla/5.0",
        "request_id": "req-1",
    }
    return EventRecord(**{**defaults, **fields})  # type: ignore[arg-type]


def test_failed_login_is_an_authentication_logon_failure() -> None:
    doc = to_ocsf(
        record(
            EventType.LOGIN_FAILURE,
            outcome="failure",
            severity="warning",
            subject="u_4f2a",
            details={"error": "invalid_credentials"},
        ),
        "0.1.0",
    )
    assert (doc["class_uid"], doc["category_uid"], doc["activity_id"]) == (3002, 3, 1)
    assert doc["type_uid"] == 300201
    assert doc["time"] == int(WHEN.timestamp() * 1000)
    assert (doc["status_id"], doc["status"], doc["status_detail"]) == (
        2,
        "Failure",
        "invalid_credentials",
    )
    assert doc["severity_id"] == 3
    assert doc["user"] == {"uid": "u_4f2a"}
    assert doc["src_endpoint"] == {"ip": "198.51.100.7"}
    assert doc["http_request"] == {"user_agent": "Mozilla/5.0"}
    assert doc["metadata"]["product"]["name"] == "Echo Identity"
    assert doc["metadata"]["product"]["version"] == "0.1.0"
    assert doc["metadata"]["uid"] == "7"
    assert doc["metadata"]["correlation_uid"] == "req-1"


def test_logout_is_a_logoff() -> None:
    doc = to_ocsf(record(EventType.LOGOUT, subject="u_1"), "0.1.0")
    assert (doc["class_uid"], doc["activity_id"], doc["type_uid"], doc["status_id"]) == (
        3002,
        2,
        300202,
        1,
    )


@pytest.mark.parametrize(
    ("event_type", "activity_id"),
    [
        (EventType.TOKEN_ISSUED, 1),
        (EventType.VAULT_TOKEN_READ, 2),
        (EventType.TOKEN_REFRESHED, 3),
        (EventType.KEY_ROTATED, 3),
        (EventType.TOKEN_REVOKED, 4),
        (EventType.TOKEN_REUSE_DETECTED, 99),
        (EventType.VAULT_TOKEN_DENIED, 99),
    ],
)
def test_token_vault_and_key_events_are_api_activity(
    event_type: EventType, activity_id: int
) -> None:
    doc = to_ocsf(
        record(
            event_type,
            client_id="billing",
            subject="u_9",
            severity="high",
            token_fingerprint="abc123def456",
        ),
        "0.1.0",
    )
    assert (doc["class_uid"], doc["category_uid"], doc["activity_id"]) == (6003, 6, activity_id)
    assert doc["type_uid"] == 600300 + activity_id
    assert doc["severity_id"] == 4
    assert doc["api"]["operation"] == str(event_type)
    assert doc["actor"] == {"user": {"uid": "u_9"}, "app_uid": "billing"}
    assert doc["unmapped"]["token_fingerprint"] == "abc123def456"


def test_export_carries_no_raw_secret_only_what_the_event_stored() -> None:
    doc = to_ocsf(
        record(EventType.TOKEN_ISSUED, client_id="web", details={"family_id": "f1"}), "0.1.0"
    )
    assert doc["unmapped"]["details"] == {"family_id": "f1"}
    assert "token" not in {key for key in doc if key != "unmapped"}
