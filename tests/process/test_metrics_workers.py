"""/metrics of ``echo-identity serve --workers 2``: every worker reports the same totals."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from tests.support.environment import app_environment
from tests.support.metrics import scrape, value
from tests.support.processes import start_server_process


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
    server = start_server_process(env, tmp_path / "server.log", workers=2)
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
