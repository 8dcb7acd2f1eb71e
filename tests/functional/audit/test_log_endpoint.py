"""POST /log: only Echo Identity access tokens for the log audience with logs:write get in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import func, select

from echo_identity.audit.log_models import ApplicationLog
from echo_identity.db import Database
from tests.support.environment import settings_for
from tests.support.oidc import (
    RegisteredClient,
    client_credentials_token,
    log_audience,
    log_client,
    sign_as_server,
)
from tests.support.server import LiveServer


@pytest.fixture(scope="module")
def sender(dev_server: LiveServer) -> RegisteredClient:
    return log_client(dev_server)


@pytest.fixture
def token(dev_server: LiveServer, sender: RegisteredClient) -> str:
    access: str = client_credentials_token(dev_server, sender)["access_token"]
    return access


def post_log(
    server: LiveServer, token: str | None, body: Any = None, **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    if "content" not in kwargs:
        kwargs["json"] = body if body is not None else {"level": "info", "message": "hello"}
    return httpx.post(f"{server.base_url}/log", headers=headers, timeout=10, **kwargs)


def stored(server: LiveServer, source: str | None = None) -> int:
    database = Database(settings_for(server.env).database_url)
    try:
        with database.session() as session:
            statement = select(func.count()).select_from(ApplicationLog)
            if source is not None:
                statement = statement.where(ApplicationLog.source == source)
            return int(session.scalar(statement) or 0)
    finally:
        database.dispose()


def rows(server: LiveServer, source: str) -> list[ApplicationLog]:
    database = Database(settings_for(server.env).database_url)
    try:
        with database.session() as session:
            return list(
                session.scalars(
                    select(ApplicationLog)
                    .where(ApplicationLog.source == source)
                    .order_by(ApplicationLog.id)
                )
            )
    finally:
        database.dispose()


def claims_for(server: LiveServer, client_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": server.env["ECHO_ISSUER"],
        "sub": client_id,
        "aud": log_audience(server),
        "client_id": client_id,
        "scope": "logs:write",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def published_kid_and_pem(server: LiveServer) -> tuple[str, bytes]:
    jwks = httpx.get(f"{server.base_url}/jwks").json()["keys"]
    es256 = next(k for k in jwks if k.get("alg") == "ES256")
    key = ECKey.import_key(es256)
    return es256["kid"], key.as_pem(private=False)


def test_valid_token_stores_one_event_under_the_tokens_client(
    dev_server: LiveServer, sender: RegisteredClient, token: str
) -> None:
    before = stored(dev_server, sender.client_id)
    response = post_log(dev_server, token, {"level": "warning", "message": "disk almost full"})
    assert response.status_code == 201, response.text
    assert response.json() == {"stored": 1, "source": sender.client_id}
    assert stored(dev_server, sender.client_id) == before + 1
    assert rows(dev_server, sender.client_id)[-1].level == "warning"


def test_batch_is_stored_with_the_source_taken_from_the_token_not_the_body(
    dev_server: LiveServer, sender: RegisteredClient, token: str
) -> None:
    batch = [
        {"level": "info", "message": f"event {i}", "timestamp": "2026-11-22T10:00:00Z"}
        for i in range(3)
    ]
    batch[0]["fields"] = {"order": 42}
    response = post_log(dev_server, token, batch)
    assert response.status_code == 201, response.text
    latest = rows(dev_server, sender.client_id)[-3:]
    assert [r.message for r in latest] == ["event 0", "event 1", "event 2"]
    assert latest[0].fields == {"order": 42}
    assert latest[0].occurred_at is not None
    assert latest[0].occurred_at.hour == 10
    # A body claiming another source is refused rather than believed.
    spoof = post_log(dev_server, token, {"level": "info", "message": "x", "source": "admin"})
    assert spoof.status_code == 400
    assert spoof.json()["error"] == "invalid_log_event"


def test_secrets_in_messages_and_fields_are_redacted_before_storage(
    dev_server: LiveServer, sender: RegisteredClient, token: str
) -> None:
    secret = "hunter2-" + uuid.uuid4().hex
    response = post_log(
        dev_server,
        token,
        {
            "level": "error",
            "message": f"login failed password={secret} with Bearer {token}",
            "fields": {"password": secret, "refresh_token": secret, "nested": {"api_key": secret}},
        },
    )
    assert response.status_code == 201
    row = rows(dev_server, sender.client_id)[-1]
    dumped = row.message + json.dumps(row.fields)
    assert secret not in dumped
    assert token not in dumped
    assert row.fields["password"] == "[REDACTED]"
    assert row.fields["refresh_token"].startswith("sha256:")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b'{"level": "info", "message": NaN}', "invalid_json"),
        (b'{"level": "loud", "message": "x"}', "unknown_level"),
        (b'{"message": "x"}', "unknown_level"),
        (b'{"level": "info"}', "invalid_log_event"),
        (b'{"level": "info", "message": "x", "fields": [1]}', "invalid_log_event"),
        (b'{"level": "info", "message": "x", "timestamp": "yesterday"}', "invalid_log_event"),
        (
            b'{"level": "info", "message": "x", "timestamp": "2026-11-22T10:00:00"}',
            "invalid_log_event",
        ),
        (b"[]", "invalid_log_event"),
        (b'"just a string"', "invalid_log_event"),
        (
            b'[{"level": "info", "message": "ok"}, {"level": "nope", "message": "x"}]',
            "unknown_level",
        ),
    ],
)
def test_bad_bodies_get_400_with_a_stable_code_and_store_nothing(
    dev_server: LiveServer, sender: RegisteredClient, token: str, body: bytes, code: str
) -> None:
    before = stored(dev_server)
    response = post_log(
        dev_server, token, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code
    assert "Traceback" not in response.text
    assert stored(dev_server) == before


def test_oversized_body_and_batch_get_400_and_store_nothing(
    dev_server: LiveServer, token: str
) -> None:
    before = stored(dev_server)
    huge = {"level": "info", "message": "x", "fields": {"blob": "a" * 300_000}}
    too_big = post_log(dev_server, token, huge)
    assert too_big.status_code == 400
    assert too_big.json()["error"] == "body_too_large"
    many = post_log(dev_server, token, [{"level": "info", "message": "x"}] * 101)
    assert many.status_code == 400
    assert many.json()["error"] == "batch_too_large"
    assert stored(dev_server) == before


def forged_tokens(server: LiveServer, client_id: str) -> dict[str, str]:
    kid, public_pem = published_kid_and_pem(server)
    claims = claims_for(server, client_id)
    other_key = ECKey.import_key(
        ec.generate_private_key(ec.SECP256R1())  # type: ignore[arg-type]
    )
    header = {"alg": "none", "typ": "at+jwt", "kid": kid}
    unsigned = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."
    # Built by hand: joserfc (rightly) refuses to use a public key as an HMAC secret.
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": kid}).encode())
    signing_input = f"{hs_header}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    hs256 = f"{signing_input}.{b64(mac)}"
    return {
        "another_key": jwt.encode(
            {"alg": "ES256", "typ": "at+jwt", "kid": kid}, claims, other_key, algorithms=["ES256"]
        ),
        "alg_none": unsigned,
        "hs256_with_public_key": hs256,
        "expired": sign_as_server(
            server,
            claims_for(server, client_id, iat=int(time.time()) - 4000, exp=int(time.time()) - 3000),
        ),
        "not_yet_valid": sign_as_server(
            server, claims_for(server, client_id, nbf=int(time.time()) + 3600)
        ),
        "wrong_audience": sign_as_server(
            server, claims_for(server, client_id, aud="https://billing.example")
        ),
        "wrong_issuer": sign_as_server(
            server, claims_for(server, client_id, iss="https://evil.example")
        ),
        "id_token_typ": sign_as_server(
            server, claims_for(server, client_id), header={"typ": "JWT"}
        ),
        "unknown_kid": sign_as_server(
            server, claims_for(server, client_id), header={"kid": "nope"}
        ),
    }


def test_every_forged_token_gets_401_invalid_token_and_nothing_is_stored(
    dev_server: LiveServer, sender: RegisteredClient
) -> None:
    tokens = forged_tokens(dev_server, sender.client_id)
    # Control: the same claims, correctly signed, are accepted — so each refusal below is
    # caused by the one thing forged in it.
    genuine = sign_as_server(dev_server, claims_for(dev_server, sender.client_id))
    assert post_log(dev_server, genuine).status_code == 201
    before = stored(dev_server)
    for name, forged in tokens.items():
        response = post_log(dev_server, forged)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"', name
        assert response.json()["error"] == "invalid_token", name
    assert post_log(dev_server, None).status_code == 401
    assert post_log(dev_server, "not-a-jwt").status_code == 401
    assert stored(dev_server) == before


def test_a_real_token_for_another_audience_or_without_logs_write_is_refused(
    dev_server: LiveServer,
) -> None:
    other_audience = log_client(dev_server, audience="https://billing.example")
    no_scope = log_client(dev_server, scope="api:read")
    before = stored(dev_server)
    access = client_credentials_token(dev_server, other_audience)["access_token"]
    response = post_log(dev_server, access)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # The right audience without logs:write: 403 insufficient_scope, like /api/v1 (RFC 6750).
    access = client_credentials_token(dev_server, no_scope)["access_token"]
    response = post_log(dev_server, access)
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "insufficient_scope"
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="logs:write"'
    )
    assert stored(dev_server) == before


def test_a_revoked_token_is_refused(
    dev_server: LiveServer, sender: RegisteredClient, token: str
) -> None:
    revoked = httpx.post(
        f"{dev_server.base_url}/revoke",
        data={"token": token},
        auth=(sender.client_id, sender.client_secret or ""),
    )
    assert revoked.status_code == 200
    before = stored(dev_server)
    assert post_log(dev_server, token).status_code == 401
    assert stored(dev_server) == before


def test_cli_lists_logs_per_source(
    dev_server: LiveServer, sender: RegisteredClient, token: str
) -> None:
    from tests.support.server import run_cli

    marker = "cli-marker-" + uuid.uuid4().hex[:8]
    assert post_log(dev_server, token, {"level": "info", "message": marker}).status_code == 201
    result = run_cli(dev_server.env, "audit", "logs", "--source", sender.client_id, "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["source"] == sender.client_id
    assert listed["logs"][0]["message"] == marker
    other = run_cli(dev_server.env, "audit", "logs", "--source", "someone-else", "--json")
    assert json.loads(other.stdout)["logs"] == []
