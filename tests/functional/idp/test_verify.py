"""/verify accepts only genuine, current, unrevoked tokens meant for the caller."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from tests.support.oidc import (
    RegisteredClient,
    client_credentials_token,
    register_client,
    service_client,
    sign_as_server,
)
from tests.support.server import LiveServer, run_cli


@pytest.fixture
def caller(dev_server: LiveServer) -> RegisteredClient:
    """A resource server that verifies tokens minted for the audience ``api://orders``."""
    return register_client(
        dev_server,
        "--name",
        "Orders API",
        "--grant-type",
        "client_credentials",
        "--audience",
        "api://orders",
    )


@pytest.fixture
def minted(dev_server: LiveServer) -> dict[str, Any]:
    client = service_client(dev_server, "--audience", "api://orders")
    return client_credentials_token(dev_server, client)


def _verify(server: LiveServer, caller: RegisteredClient, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/verify",
        data={"token": token},
        auth=(caller.client_id, caller.client_secret or ""),
    )


def _claims(server: LiveServer, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": server.env["ECHO_ISSUER"],
        "sub": "svc",
        "aud": "api://orders",
        "client_id": "svc",
        "scope": "api:read",
        "iat": now,
        "exp": now + 300,
        "jti": "j-1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_genuine_token_for_the_callers_audience_is_active(
    dev_server: LiveServer, caller: RegisteredClient, minted: dict[str, Any]
) -> None:
    response = _verify(dev_server, caller, minted["access_token"])
    assert response.status_code == 200
    body = response.json()
    assert body["active"] is True
    assert body["aud"] == "api://orders"
    assert body["iss"] == dev_server.env["ECHO_ISSUER"]
    assert {"sub", "client_id", "scope", "iat", "exp", "jti"} <= body.keys()


def test_token_for_another_audience_is_refused(
    dev_server: LiveServer, minted: dict[str, Any]
) -> None:
    stranger = service_client(dev_server)
    response = _verify(dev_server, stranger, minted["access_token"])
    assert response.status_code == 401
    assert response.json() == {
        "active": False,
        "error": "invalid_audience",
        "error_description": "The token is meant for another audience.",
    }


def test_tampered_token_is_refused(
    dev_server: LiveServer, caller: RegisteredClient, minted: dict[str, Any]
) -> None:
    header, payload, signature = minted["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "api:admin"
    forged = ".".join([header, _b64(claims), signature])
    assert _verify(dev_server, caller, forged).json()["error"] == "invalid_signature"


def test_expired_token_is_refused(dev_server: LiveServer, caller: RegisteredClient) -> None:
    now = int(time.time())
    token = sign_as_server(dev_server, _claims(dev_server, iat=now - 900, exp=now - 120))
    assert _verify(dev_server, caller, token).json()["error"] == "token_expired"


def test_token_within_clock_leeway_is_accepted(
    dev_server: LiveServer, caller: RegisteredClient
) -> None:
    now = int(time.time())
    client_id = service_client(dev_server).client_id
    token = sign_as_server(
        dev_server, _claims(dev_server, exp=now - 5, jti="leeway", client_id=client_id)
    )
    assert _verify(dev_server, caller, token).json()["active"] is True


def test_token_from_another_issuer_is_refused(
    dev_server: LiveServer, caller: RegisteredClient
) -> None:
    token = sign_as_server(dev_server, _claims(dev_server, iss="https://evil.example"))
    assert _verify(dev_server, caller, token).json()["error"] == "invalid_issuer"


def test_token_not_yet_valid_is_refused(dev_server: LiveServer, caller: RegisteredClient) -> None:
    token = sign_as_server(dev_server, _claims(dev_server, nbf=int(time.time()) + 600))
    assert _verify(dev_server, caller, token).json()["error"] == "invalid_token"


def test_id_token_typ_is_not_accepted_as_an_access_token(
    dev_server: LiveServer, caller: RegisteredClient
) -> None:
    token = sign_as_server(dev_server, _claims(dev_server), header={"typ": "JWT"})
    assert _verify(dev_server, caller, token).json()["error"] == "invalid_token"


def test_alg_none_is_refused(dev_server: LiveServer, caller: RegisteredClient) -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{_b64(_claims(dev_server))}."
    assert _verify(dev_server, caller, token).json()["error"] == "unsupported_algorithm"


def test_hs256_signed_with_the_public_key_is_refused(
    dev_server: LiveServer, caller: RegisteredClient
) -> None:
    jwks = httpx.get(f"{dev_server.base_url}/jwks").json()["keys"]
    public = next(k for k in jwks if k["alg"] == "ES256")
    secret = OctKey.import_key(json.dumps(public).encode())
    token = jwt.encode(
        {"alg": "HS256", "kid": public["kid"], "typ": "at+jwt"}, _claims(dev_server), secret
    )
    assert _verify(dev_server, caller, token).json()["error"] == "unsupported_algorithm"


def test_token_signed_by_another_key_is_refused(
    dev_server: LiveServer, caller: RegisteredClient
) -> None:
    jwks = httpx.get(f"{dev_server.base_url}/jwks").json()["keys"]
    kid = next(k for k in jwks if k["alg"] == "ES256")["kid"]
    attacker = ECKey.generate_key("P-256")
    token = jwt.encode({"alg": "ES256", "kid": kid, "typ": "at+jwt"}, _claims(dev_server), attacker)
    assert _verify(dev_server, caller, token).json()["error"] == "invalid_signature"


def test_revoked_token_is_refused_until_it_expires(
    dev_server: LiveServer, caller: RegisteredClient
) -> None:
    client = service_client(dev_server, "--audience", "api://orders")
    token = client_credentials_token(dev_server, client)["access_token"]
    assert _verify(dev_server, caller, token).json()["active"] is True
    revoked = httpx.post(
        f"{dev_server.base_url}/revoke",
        data={"token": token},
        auth=(client.client_id, client.client_secret or ""),
    )
    assert revoked.status_code == 200
    assert _verify(dev_server, caller, token).json()["error"] == "token_revoked"


def test_unauthenticated_or_disabled_caller_is_refused(
    dev_server: LiveServer, caller: RegisteredClient, minted: dict[str, Any]
) -> None:
    anonymous = httpx.post(f"{dev_server.base_url}/verify", data={"token": minted["access_token"]})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"
    assert run_cli(dev_server.env, "clients", "disable", caller.client_id).returncode == 0
    dev_server.advance(1.0)  # another process's change reaches every worker within a second
    assert _verify(dev_server, caller, minted["access_token"]).json()["error"] == "invalid_client"


def test_tokens_of_a_disabled_client_are_refused(
    dev_server: LiveServer, caller: RegisteredClient
) -> None:
    client = service_client(dev_server, "--audience", "api://orders")
    token = client_credentials_token(dev_server, client)["access_token"]
    assert _verify(dev_server, caller, token).json()["active"] is True
    assert run_cli(dev_server.env, "clients", "disable", client.client_id).returncode == 0
    dev_server.advance(1.0)  # another process's change reaches every worker within a second
    assert _verify(dev_server, caller, token).json()["error"] == "client_disabled"
    revoke = httpx.post(
        f"{dev_server.base_url}/revoke",
        data={"token": token},
        auth=(client.client_id, client.client_secret or ""),
    )
    assert revoke.status_code == 401  # the disabled client cannot even authenticate
