"""GET /api/v1/audit/events: audit:read tokens only, working filters, stable pages, no secrets."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.factories import create_user
from tests.support.browser import Browser
from tests.support.environment import settings_for
from tests.support.oidc import (
    RegisteredClient,
    client_credentials_token,
    register_client,
    service_client,
    sign_as_server,
)
from tests.support.server import LiveServer

URL = "/api/v1/audit/events"


def auditor(server: LiveServer) -> str:
    client = register_client(
        server, "--name", "SIEM", "--grant-type", "client_credentials", "--scope", "audit:read"
    )
    token: str = client_credentials_token(server, client)["access_token"]
    return token


def get(server: LiveServer, token: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{server.base_url}{URL}", params=params, headers=headers, timeout=10)


def events(server: LiveServer, token: str, **params: Any) -> list[dict[str, Any]]:
    response = get(server, token, **params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


@pytest.fixture(scope="module")
def token(dev_server: LiveServer) -> str:
    return auditor(dev_server)


@pytest.fixture(scope="module")
def issuing_client(dev_server: LiveServer) -> tuple[RegisteredClient, list[str]]:
    """A service client that was issued three access tokens."""
    client = service_client(dev_server)
    issued = [client_credentials_token(dev_server, client)["access_token"] for _ in range(3)]
    return client, issued


def test_missing_or_invalid_tokens_get_401_with_a_bearer_challenge(
    dev_server: LiveServer,
) -> None:
    expired = sign_as_server(
        dev_server,
        {
            "iss": settings_for(dev_server.env).issuer,
            "sub": "siem",
            "client_id": "siem",
            "jti": "expired-1",
            "scope": "audit:read",
            "iat": int(time.time()) - 7200,
            "exp": int(time.time()) - 3600,
        },
    )
    for bad in ("not-a-jwt", expired):
        response = get(dev_server, bad)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert "events" not in response.json()
    # No credential at all: a bare challenge (RFC 6750 §3.1), the body still has a code.
    missing = get(dev_server, None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"] == "invalid_request"
    assert "events" not in missing.json()


def test_a_valid_token_without_audit_read_gets_403_insufficient_scope(
    dev_server: LiveServer,
) -> None:
    # vault:read puts the API audience in the token: only the scope is missing.
    vault_reader = register_client(
        dev_server,
        "--name",
        "Vault reader",
        "--grant-type",
        "client_credentials",
        "--scope",
        "vault:read",
    )
    other = client_credentials_token(dev_server, vault_reader)["access_token"]
    response = get(dev_server, other)
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="audit:read"'
    )


def test_filters_by_type_client_outcome_and_time(
    dev_server: LiveServer, token: str, issuing_client: tuple[RegisteredClient, list[str]]
) -> None:
    client, _ = issuing_client
    issued = events(dev_server, token, type="oauth.token.issued", client_id=client.client_id)
    assert len(issued) == 3
    assert {e["event_type"] for e in issued} == {"oauth.token.issued"}
    assert {e["client_id"] for e in issued} == {client.client_id}
    by_prefix = events(dev_server, token, type="oauth.token.*", client_id=client.client_id)
    assert {e["id"] for e in issued} <= {e["id"] for e in by_prefix}
    assert all(e["event_type"].startswith("oauth.token.") for e in by_prefix)

    user = create_user(settings_for(dev_server.env).database_url)
    assert Browser(dev_server).login(user.username, "wrong").status_code == 401
    failures = events(dev_server, token, type="auth.login.failure", outcome="failure", limit=1)
    assert failures[0]["outcome"] == "failure"
    assert events(dev_server, token, outcome="no-such-outcome") == []

    oldest = issued[-1]["occurred_at"]
    window = {"client_id": client.client_id, "type": "oauth.token.issued"}
    assert events(dev_server, token, **window, until=oldest) == []
    assert len(events(dev_server, token, **window, since=oldest)) >= 3
    assert events(dev_server, token, since="2999-01-01T00:00:00Z") == []


def test_pages_are_stable_while_new_events_arrive(
    dev_server: LiveServer, token: str, issuing_client: tuple[RegisteredClient, list[str]]
) -> None:
    client, _ = issuing_client
    everything = events(dev_server, token, client_id=client.client_id, type="oauth.token.issued")
    first = get(dev_server, token, client_id=client.client_id, type="oauth.token.issued", limit=2)
    page1 = first.json()
    assert [e["id"] for e in page1["events"]] == [e["id"] for e in everything[:2]]
    assert page1["next_cursor"]
    client_credentials_token(dev_server, client)  # a new event between the two pages
    page2 = get(
        dev_server,
        token,
        client_id=client.client_id,
        type="oauth.token.issued",
        limit=2,
        cursor=page1["next_cursor"],
    ).json()
    assert [e["id"] for e in page2["events"]] == [e["id"] for e in everything[2:4]]
    ids = [e["id"] for e in page1["events"] + page2["events"]]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"cursor": "garbage!"},
        {"since": "last tuesday"},
        {"colour": "blue"},
    ],
)
def test_bad_parameters_get_400_invalid_request_without_a_trace(
    dev_server: LiveServer, token: str, params: dict[str, str]
) -> None:
    response = get(dev_server, token, **params)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "Traceback" not in response.text


def test_events_carry_fingerprints_never_tokens_or_secrets(
    dev_server: LiveServer, token: str, issuing_client: tuple[RegisteredClient, list[str]]
) -> None:
    client, issued = issuing_client
    response = get(dev_server, token, client_id=client.client_id, limit=500)
    assert response.status_code == 200
    found = response.json()["events"]
    assert found
    assert all(len(e["token_fingerprint"] or "x" * 12) == 12 for e in found)
    for secret in [client.client_secret or "", *issued, token]:
        assert secret
        assert secret not in response.text


def test_every_read_of_the_trail_is_itself_recorded_with_its_filters(
    dev_server: LiveServer,
) -> None:
    reader = auditor(dev_server)
    marker = f"no.such.type.{time.time_ns()}"
    assert events(dev_server, reader, type=marker) == []
    [read] = events(dev_server, reader, type="admin.audit.events_read", limit=1)
    assert read["details"]["filters"] == {"type": marker}
    assert read["details"]["returned"] == 0
    assert read["client_id"] is not None
    assert read["token_fingerprint"] is not None
    assert reader not in str(read)
