"""The served OpenAPI document and the code agree, both ways (schemathesis, every check).

schemathesis reads ``/api/v1/openapi.json`` from a running server and, seeded and bounded,
sends what the document allows (every such request must be accepted: 2xx, or the 401/403/404
a token or a missing resource explains), what it forbids (every such request must be refused
with a 4xx), no token or another method (401, 405 with ``Allow``), and chains calls (a deleted
connection stays gone). Every answer must have a documented status, headers, content type and
shape, and nothing may be a 5xx.

It calls with a real token of a real service (``vault:read vault:revoke audit:read``) on the
connections of users who consented to that service, so the vault calls get past the 403 to the
token itself: one user for listing and fetching, another for the DELETE (which ends the
connection). Path parameters with NUL and other hostile bytes are the hostile-input suite's.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factories import create_user
from tests.support.processes import BIN
from tests.support.server import LiveServer
from tests.support.vault import (
    connect_upstream,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)

SEED = 20261201
MAX_EXAMPLES = 25


@dataclass(frozen=True)
class Consented:
    token: str
    config: Path
    provider: str


def schemathesis_config(path: Path, sub: str, deleted_sub: str, provider: str) -> Path:
    """Real path parameters; every warning (e.g. "only 401/403 responses") fails the run."""
    path.write_text(
        f"""
[warnings]
fail-on = true

[parameters]
"path.sub" = {json.dumps(sub)}
"path.provider" = {json.dumps(provider)}

[[operations]]
include-method = "DELETE"
parameters = {{ "path.sub" = {json.dumps(deleted_sub)}, "path.provider" = {json.dumps(provider)} }}
"""
    )
    return path


@pytest.fixture
def consented(dev_server: LiveServer, upstream_server: LiveServer, tmp_path: Path) -> Consented:
    """A service's token; two users whose consent to the provider names that service."""
    provider = f"contract{secrets.token_hex(3)}"
    upstream = connect_upstream(dev_server, upstream_server, provider)
    service = vault_service_client(dev_server, provider, "vault:read vault:revoke audit:read")
    kept, deleted = (create_user(dev_server.env["ECHO_DATABASE_URL"]) for _ in range(2))
    for user in (kept, deleted):
        run_connect_flow(dev_server, upstream, user)
    config = schemathesis_config(tmp_path / "schemathesis.toml", kept.sub, deleted.sub, provider)
    return Consented(vault_api_token(dev_server, service), config, provider)


def statuses(server: LiveServer, since_line: int, path_end: str) -> set[int]:
    """Statuses the server logged for paths ending in ``path_end`` after ``since_line``."""
    return {
        event["status"]
        for event in server.log_events()[since_line:]
        if event.get("event") == "request" and event["path"].endswith(path_end)
    }


def test_the_api_keeps_every_promise_of_its_openapi_document(
    dev_server: LiveServer, consented: Consented, tmp_path: Path
) -> None:
    first_line = len(dev_server.log_events())
    result = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "--config-file",
            str(consented.config),
            "run",
            f"{dev_server.base_url}/api/v1/openapi.json",
            "--checks",
            "all",
            "--seed",
            str(SEED),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--workers",
            "1",
            "--header",
            f"Authorization: Bearer {consented.token}",
            "--generation-database",
            "none",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout
    # the vault calls were exercised past authorization: tokens handed out, bodies refused
    assert {200, 400} <= statuses(dev_server, first_line, "/token")
    assert 204 in statuses(dev_server, first_line, f"/connections/{consented.provider}")
