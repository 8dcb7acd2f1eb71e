"""benchmarks/vault_layer.py, the bare ceiling of the vault hand-out benchmark: it answers the
stored token to the one client and user it may, writes one audit row for that, and refuses
every other call without writing one; with and without the writers' flock."""

from __future__ import annotations

import base64
import importlib
import io
import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
ISSUER = "https://issuer.example.test"
AUDIENCE = ISSUER + "/api/v1"
STORED = "gho_SECRET-token"
KEY = ECKey.generate_key("P-256", {"kid": "k"}, private=True)
OTHER_KEY = ECKey.generate_key("P-256", {"kid": "k"}, private=True)


@pytest.fixture
def vault_layer(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("vault_layer")


def _token(signer: ECKey = KEY, typ: str = "at+jwt", **changes: Any) -> str:
    """A bearer token for client ``svc``; a change to ``None`` drops the claim."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "svc",
        "client_id": "svc",
        "aud": ["svc", AUDIENCE],
        "scope": "vault:read",
        "iat": now,
        "exp": now + 600,
        "jti": secrets.token_hex(8),
        **changes,
    }
    claims = {name: value for name, value in claims.items() if value is not None}
    token: str = jwt.encode({"alg": "ES256", "typ": typ, "kid": "k"}, claims, signer)
    return token


Call = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture(params=[False, True], ids=["busy-handler", "flock"])
def layer(vault_layer: ModuleType, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    database = tmp_path / "layer.db"
    kek = secrets.token_bytes(32)
    vault_layer.prepare_database(
        str(database),
        kek=kek,
        client_id="svc",
        sub="user-1",
        provider="gh",
        access_token=STORED,
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    app = vault_layer.VaultLayer(
        issuer=ISSUER,
        audience=AUDIENCE,
        public_jwk=KEY.as_dict(private=False),
        kek=kek,
        pseudonym_key=b"p" * 32,
        database=str(database),
        flock=request.param,
    )

    def call(
        token: str | None, sub: str = "user-1", provider: str = "gh", body: bytes = b"{}"
    ) -> tuple[int, dict[str, Any]]:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": f"/api/v1/users/{sub}/connections/{provider}/token",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        if token is not None:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        statuses: list[str] = []
        raw = b"".join(app(environ, lambda status, headers: statuses.append(status)))
        return int(statuses[0].split()[0]), json.loads(raw)

    return call, database


def _rows(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        count: int = connection.execute("SELECT count(*) FROM audit_events").fetchone()[0]
    connection.close()
    return count


def _change(database: Path, statement: str, *parameters: Any) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute(statement, parameters)
    connection.close()


def test_the_client_gets_the_stored_token_and_one_audit_row(layer: Any) -> None:
    call, database = layer

    status, body = call(_token())

    assert (status, body["access_token"], body["token_type"]) == (200, STORED, "Bearer")
    assert _rows(database) == 1


REFUSED_REQUESTS: dict[str, Callable[[Call], tuple[int, dict[str, Any]]]] = {
    "no token": lambda call: call(None),
    "signed by another key": lambda call: call(_token(signer=OTHER_KEY)),
    "another issuer": lambda call: call(_token(iss="https://evil.example.test")),
    "not for the API": lambda call: call(_token(aud=["svc"])),
    "expired": lambda call: call(_token(exp=int(time.time()) - 5)),
    "issued in the future": lambda call: call(_token(iat=int(time.time()) + 300)),
    "an id token": lambda call: call(_token(typ="JWT")),
    "without vault:read": lambda call: call(_token(scope="openid")),
    "another user": lambda call: call(_token(), sub="user-2"),
    "another provider": lambda call: call(_token(), provider="google"),
    "another client": lambda call: call(_token(sub="svc2", client_id="svc2")),
    "an unknown body field": lambda call: call(_token(), body=b'{"min_tll": 5}'),
    "a min_ttl too long": lambda call: call(_token(), body=b'{"min_ttl": 999999999}'),
}


@pytest.mark.parametrize("case", REFUSED_REQUESTS)
def test_a_hostile_request_is_refused_without_an_audit_row(layer: Any, case: str) -> None:
    call, database = layer

    status, body = REFUSED_REQUESTS[case](call)

    assert status in (400, 401, 403, 404), body
    assert "access_token" not in body
    assert _rows(database) == 0


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    jti: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    return jti


def _tamper_ciphertext(database: Path) -> None:
    with sqlite3.connect(database) as connection:
        row = connection.execute("SELECT access_token_ciphertext FROM vault_connections").fetchone()
        blob = bytearray(row[0])
        blob[-1] ^= 1
        connection.execute("UPDATE vault_connections SET access_token_ciphertext = ?", (blob,))
    connection.close()


def test_a_revoked_token_withdrawn_consent_disabled_client_or_altered_ciphertext_is_refused(
    layer: Any,
) -> None:
    call, database = layer
    revoked = _token()
    _change(database, "INSERT INTO revoked_access_tokens VALUES (?, 'later')", _jti(revoked))
    assert call(revoked)[0] == 401

    _change(database, "UPDATE vault_consents SET withdrawn_at = 'now'")
    assert call(_token())[0] == 403
    _change(database, "UPDATE vault_consents SET withdrawn_at = NULL")

    _change(database, "UPDATE oauth_clients SET disabled = 1")
    assert call(_token())[0] == 401
    _change(database, "UPDATE oauth_clients SET disabled = 0")

    _tamper_ciphertext(database)
    status, body = call(_token())
    assert (status, body) == (500, {"error": "stored_token_unreadable"})
    assert _rows(database) == 0
