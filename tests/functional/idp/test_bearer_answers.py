"""The same bearer condition gets the same answer at every API Echo protects with its tokens
(``idp/bearer.py``): a token Echo minted for its own APIs that lacks the call's scope is 403
``insufficient_scope`` naming that scope — at /log too, although such a token does not name the
/log audience (only ``logs:write`` brings it)."""

from __future__ import annotations

import httpx

from tests.support.oidc import client_credentials_token, log_client, service_client
from tests.support.server import LiveServer


def _insufficient_scope(response: httpx.Response, scope: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "insufficient_scope"
    assert response.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", scope="{scope}"'
    )


def test_a_token_without_the_scope_gets_403_insufficient_scope_at_every_bearer_api(
    dev_server: LiveServer,
) -> None:
    # scope api:read: its token names only its own client (no Echo API audience at all)
    token = client_credentials_token(dev_server, service_client(dev_server))["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    base = dev_server.base_url
    _insufficient_scope(
        httpx.post(f"{base}/log", headers=bearer, json={"level": "info", "message": "hi"}),
        "logs:write",
    )
    _insufficient_scope(httpx.get(f"{base}/api/v1/audit/events", headers=bearer), "audit:read")
    _insufficient_scope(
        httpx.get(f"{base}/api/v1/users/someone/connections", headers=bearer), "vault:read"
    )
    _insufficient_scope(httpx.get(f"{base}/userinfo", headers=bearer), "openid")


def test_a_vault_token_at_log_gets_403_insufficient_scope_and_a_log_token_is_accepted(
    dev_server: LiveServer,
) -> None:
    # vault:read names the /api/v1 audience, not /log's: the scope is what is missing
    vault = service_client(dev_server, "--scope", "vault:read")
    token = client_credentials_token(dev_server, vault)["access_token"]
    response = httpx.post(
        f"{dev_server.base_url}/log",
        headers={"Authorization": f"Bearer {token}"},
        json={"level": "info", "message": "hi"},
    )
    _insufficient_scope(response, "logs:write")
    # Control: with logs:write the same kind of client is accepted.
    sender = client_credentials_token(dev_server, log_client(dev_server))["access_token"]
    accepted = httpx.post(
        f"{dev_server.base_url}/log",
        headers={"Authorization": f"Bearer {sender}"},
        json={"level": "info", "message": "hi"},
    )
    assert accepted.status_code == 201, accepted.text
