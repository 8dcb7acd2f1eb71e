"""/metrics: counters move with real traffic and are guarded (several workers: tests/process)."""

from __future__ import annotations

import secrets

import httpx

from echo_identity.audit.alert_models import Alert
from echo_identity.db import Database, utcnow
from tests.support.environment import settings_for
from tests.support.metrics import scrape, value
from tests.support.oidc import client_credentials_token, service_client
from tests.support.server import LiveServer


def test_request_token_vault_and_alert_counters_move_with_real_traffic(
    dev_server: LiveServer,
) -> None:
    before = scrape(dev_server)
    for _ in range(2):
        assert httpx.get(f"{dev_server.base_url}/login").status_code == 200
    client = service_client(dev_server)
    client_credentials_token(dev_server, client)
    denied = httpx.get(f"{dev_server.base_url}/api/v1/users/nobody/connections")
    assert denied.status_code == 401
    database = Database(settings_for(dev_server.env).database_url)
    try:
        with database.transaction() as session:
            now = utcnow()
            session.add(
                Alert(
                    created_at=now,
                    last_seen_at=now,
                    rule="metrics_test_rule",
                    severity="high",
                    key=secrets.token_hex(4),
                    summary="raised by the metrics test",
                    evidence=[],
                )
            )
    finally:
        database.dispose()
    after = scrape(dev_server)

    login = {"method": "GET", "route": "/login", "status": "200"}
    assert (
        value(after, "echo_http_requests_total", **login)
        - value(before, "echo_http_requests_total", **login)
        == 2
    )
    issued = {"event": "oauth.token.issued", "outcome": "success"}
    assert (
        value(after, "echo_token_events_total", **issued)
        - value(before, "echo_token_events_total", **issued)
        == 1
    )
    vault_denied = {"event": "vault.token.denied", "outcome": "failure"}
    assert (
        value(after, "echo_vault_events_total", **vault_denied)
        - value(before, "echo_vault_events_total", **vault_denied)
        == 1
    )
    alert = {"rule": "metrics_test_rule", "severity": "high"}
    assert (
        value(after, "echo_alerts_total", **alert) - value(before, "echo_alerts_total", **alert)
        == 1
    )
    assert value(after, "echo_http_request_duration_seconds_count", route="/login") >= 2


def test_production_server_without_a_metrics_token_does_not_serve_metrics(
    prod_server: LiveServer,
) -> None:
    response = httpx.get(f"{prod_server.base_url}/metrics")
    assert response.status_code == 404
    assert "echo_http_requests" not in response.text
