"""``echo-identity report`` on a real database after real sign-ins, lock-outs and token grants."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import create_user
from tests.support.browser import Browser
from tests.support.environment import app_environment
from tests.support.oidc import RegisteredClient, client_credentials_token, service_client
from tests.support.server import LiveServer, run_cli, start_server


class Flows:
    """What the server under test was put through, to compare the report with."""

    def __init__(self, server: LiveServer, client: RegisteredClient, secrets: list[str]) -> None:
        self.server = server
        self.client = client
        self.secrets = secrets


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flows]:
    """A fresh server with a login limit of 3/minute, then: 1 successful sign-in, 2 failed
    ones, 2 sign-ins refused by the limit, and 3 client-credentials tokens for one client."""
    from tests.support.databases import fresh_database_url

    tmp = tmp_path_factory.mktemp("report")
    with fresh_database_url(tmp) as url:
        env = app_environment(tmp / "var", url, ECHO_LOGIN_RATE_LIMIT="3/minute")
        server = start_server(env, tmp / "server.log")
        try:
            user = create_user(url)
            browser = Browser(server)
            assert browser.login(user.username, user.password).status_code == 302
            statuses = [
                Browser(server).login(user.username, password).status_code
                for password in ("wrong-" + user.password, "nope", user.password, user.password)
            ]
            assert statuses == [401, 401, 429, 429]
            client = service_client(server)
            tokens = [client_credentials_token(server, client)["access_token"] for _ in range(3)]
            yield Flows(server, client, [user.password, client.client_secret or "", *tokens])
        finally:
            server.stop()


def report(flows: Flows, tmp_path: Path, fmt: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / f"report.{fmt}"
    result = run_cli(
        flows.server.env, "report", "--since", "1d", "--format", fmt, "--out", str(out), "--json"
    )
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["out"] == str(out)
    assert summary["format"] == fmt
    return summary, out.read_text()


def test_json_report_counts_exactly_the_sign_ins_lockouts_and_tokens_of_the_run(
    flows: Flows, tmp_path: Path
) -> None:
    summary, text = report(flows, tmp_path, "json")
    data = json.loads(text)
    assert data["logins"] == {"success": 1, "failure": 2, "locked": 2}
    assert summary["total_events"] == data["total_events"] > 0
    [client] = [c for c in data["clients"] if c["client_id"] == flows.client.client_id]
    assert client["tokens_issued"] == 3
    assert client["vault_reads"] == 0
    [day] = data["daily_logins"]
    assert (day["success"], day["failure"], day["locked"]) == (1, 2, 2)
    assert data["top_ips"][0]["ip"] == "127.0.0.1"
    assert data["top_ips"][0]["failures"] >= 4  # 2 failed sign-ins + 2 lock-outs
    assert {k["alg"] for k in data["signing_keys"]} >= {"RS256", "ES256"}
    assert all(k["state"] == "signing" and not k["rotation_due"] for k in data["signing_keys"])
    assert sum(k["current_keys"] for k in data["data_keys"]) >= 1  # the system DEK
    assert data["needs_reauth_total"] == 0
    assert data["alerts"] == [] or all(a["count"] > 0 for a in data["alerts"])


def test_html_report_shows_the_same_numbers_with_inline_svg_and_nothing_fetched(
    flows: Flows, tmp_path: Path
) -> None:
    _, page = report(flows, tmp_path, "html")
    _, text = report(flows, tmp_path, "json")
    data = json.loads(text)
    assert "<svg" in page
    assert "<script" not in page
    assert " style=" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from the network
    assert re.search(r"Lock-outs[^<]*</th><td>2</td>", page)
    assert re.search(r"Failed sign-ins</th><td>2</td>", page)
    assert f"<td>{flows.client.client_id}</td><td>3</td>" in page
    for key in data["signing_keys"]:
        assert key["kid"] in page


def test_reports_never_contain_a_password_client_secret_or_token(
    flows: Flows, tmp_path: Path
) -> None:
    pages = [report(flows, tmp_path, fmt)[1] for fmt in ("json", "html")]
    for secret in flows.secrets:
        assert secret
        for page in pages:
            assert secret not in page


def test_report_rejects_a_malformed_since_with_a_json_error_and_status_1(
    flows: Flows, tmp_path: Path
) -> None:
    result = run_cli(flows.server.env, "report", "--since", "yesterday", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "invalid_since"
    assert "Traceback" not in result.stderr


def test_report_without_out_prints_the_json_document(flows: Flows) -> None:
    result = run_cli(flows.server.env, "report", "--since", "1d", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["logins"]["success"] == 1
