"""Discovery documents, JWKS and the shape of issued tokens."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from joserfc import jws
from sqlalchemy import select

from echo_identity.audit.models import AuditEvent
from echo_identity.crypto.digests import fingerprint
from echo_identity.db import Database
from tests.support.oidc import client_credentials_token, discovery, service_client
from tests.support.server import LiveServer, running_server


def test_discovery_lists_every_endpoint_and_the_endpoints_exist(dev_server: LiveServer) -> None:
    metadata = discovery(dev_server)
    oauth = httpx.get(f"{dev_server.base_url}/.well-known/oauth-authorization-server").json()
    assert metadata == oauth
    assert metadata["issuer"] == dev_server.env["ECHO_ISSUER"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
    ):
        response = httpx.request("OPTIONS", metadata[name])
        assert response.status_code != 404, name


def test_jwks_publishes_public_keys_for_each_algorithm(dev_server: LiveServer) -> None:
    keys = httpx.get(f"{dev_server.base_url}/jwks").json()["keys"]
    assert {k["alg"] for k in keys} == {"RS256", "ES256", "EdDSA"}
    for key in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & key.keys()
        assert key["use"] == "sig"


def test_client_credentials_token_is_an_rfc9068_jwt(dev_server: LiveServer) -> None:
    client = service_client(dev_server)
    token = client_credentials_token(dev_server, client)
    assert token["token_type"] == "Bearer"
    assert "refresh_token" not in token
    compact = jws.extract_compact(token["access_token"].encode())
    assert compact.protected["typ"] == "at+jwt"
    assert compact.protected["alg"] == "ES256"
    claims = json.loads(compact.payload)
    assert {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti"} <= claims.keys()
    assert claims["sub"] == client.client_id
    assert claims["exp"] - claims["iat"] == 600
    assert claims["scope"] == "api:read"  # the registered scope when none is asked for


def test_client_credentials_refuses_scopes_the_client_is_not_registered_for(
    dev_server: LiveServer,
) -> None:
    client = service_client(dev_server)
    response = httpx.post(
        f"{dev_server.base_url}/token",
        data={"grant_type": "client_credentials", "scope": "api:read vault:read"},
        auth=(client.client_id, client.client_secret or ""),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_test_token_exists_in_development(dev_server: LiveServer) -> None:
    client = service_client(dev_server)
    response = httpx.post(f"{dev_server.base_url}/test-token", data={"client_id": client.client_id})
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"


def test_test_token_is_not_registered_in_production(tmp_path: Path) -> None:
    with running_server(tmp_path, production=True) as server:
        response = httpx.post(
            f"{server.base_url}/test-token",
            data={"client_id": "x"},
            headers={"Accept": "application/json"},
        )
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


def test_token_events_carry_ip_user_agent_and_request_id(dev_server: LiveServer) -> None:
    client = service_client(dev_server)
    response = httpx.post(
        f"{dev_server.base_url}/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.client_secret or ""),
        headers={"User-Agent": "audit-probe/1.0", "X-Request-ID": "audit-probe-0001"},
    )
    database = Database(dev_server.env["ECHO_DATABASE_URL"])
    with database.session() as session:
        event = session.scalar(
            select(AuditEvent).where(AuditEvent.request_id == "audit-probe-0001")
        )
    database.dispose()
    assert event is not None
    assert event.event_type == "oauth.token.issued"
    assert event.client_id == client.client_id
    assert event.ip == "127.0.0.1"
    assert event.user_agent == "audit-probe/1.0"
    assert event.token_fingerprint == fingerprint(response.json()["access_token"])
