"""/metrics: counters move with real traffic, agree across worker processes, and are guarded."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from echo_identity.audit.alert_models import Alert
from echo_identity.db import Database, utcnow
from tests.support.environment import app_environment, settings_for
from tests.support.oidc import client_credentials_token, service_client
from tests.support.server import LiveServer, start_server


def scrape(
    server: LiveServer, token: str | None = None
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{server.base_url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


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


@pytest.mark.parametrize(
    "operator_directory", [True, False], ids=["operator-dir", "serve-made-dir"]
)
def test_several_workers_report_the_same_totals_and_the_metrics_token_is_required(
    tmp_path: Path, database_url: str, operator_directory: bool
) -> None:
    token = secrets.token_urlsafe(32)
    extra = {"ECHO_METRICS_TOKEN": token}
    if operator_directory:  # left over from an earlier run: serve must empty it first
        directory = tmp_path / "prometheus"
        directory.mkdir()
        (directory / "counter_4242.db").write_bytes(b"stale values of a dead worker")
        extra["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    env = app_environment(tmp_path / "var", database_url, **extra)
    server = start_server(env, tmp_path / "server.log", workers=2)
    try:
        assert httpx.get(f"{server.base_url}/metrics").status_code == 401
        wrong = httpx.get(f"{server.base_url}/metrics", headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "invalid_token"
        with httpx.Client(base_url=server.base_url) as client:
            for _ in range(12):  # new connections spread over both workers
                assert client.get("/login", headers={"Connection": "close"}).status_code == 200
        login = {"method": "GET", "route": "/login", "status": "200"}
        seen = {value(scrape(server, token), "echo_http_requests_total", **login) for _ in range(6)}
        assert seen == {12.0}
    finally:
        server.stop()
