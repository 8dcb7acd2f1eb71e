"""Stripped-down token endpoints for ``token_endpoint.py --layers``: how fast each layer of
Echo's stack can go on this machine, measured in the same run as Echo and node-oidc-provider.

Not Echo Identity and not for use: each app answers ``client_credentials`` requests (HTTP Basic)
for one client with an RFC 9068 ES256 JWT signed by joserfc, as Echo does, and serves the
discovery document and JWKS the benchmark's token check needs. What differs is how much of
Echo's stack sits around that:

- ``wsgi``: a bare WSGI callable; the client is held in memory, nothing is stored.
- ``wsgi_sqlite``: ``wsgi`` plus Echo's per-token database work done as cheaply as SQLite
  allows: the client row read, one audit row inserted and committed (raw ``sqlite3``, WAL,
  ``synchronous=NORMAL``, ``BEGIN IMMEDIATE``, an ``audit_events`` table with Echo's indexes).
- ``flask_authlib``: Flask + Authlib's ``AuthorizationServer`` and ``ClientCredentialsGrant``;
  the client is held in memory, nothing is stored, no request hooks.
- ``authlib_sqlite``: Authlib's framework-free server (no Flask) with the SQLite work of
  ``wsgi_sqlite``.
- ``*_flock``: the same, with writers of all worker processes queued on an exclusive
  ``flock`` of a lock file beside the database before ``BEGIN IMMEDIATE``. SQLite's own busy
  handler (what Echo relies on) retries a locked database after sleeping 1, 2, 5, 10 … ms; the
  kernel lock wakes the next writer as soon as the lock is free.

granian serves ``stack_layers:app``; ``BENCH_LAYER`` picks the layer, ``BENCH_ISSUER``,
``BENCH_CLIENT_ID``, ``BENCH_CLIENT_SECRET``, ``BENCH_JWK`` (the private signing JWK, the same in
every worker) and, for the SQLite layers, ``BENCH_DATABASE`` configure it.
:func:`prepare_database` creates the database before the workers start.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from joserfc import jwt
from joserfc.jwk import ECKey

LAYERS = (
    "wsgi",
    "wsgi_sqlite",
    "wsgi_sqlite_flock",
    "flask_authlib",
    "authlib_sqlite",
    "authlib_sqlite_flock",
)
SCOPE = "api:read"
_DIGEST_KEY = b"stack-layers-digest-key"  # a benchmark constant, not a secret

StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS oauth_clients (
    client_id TEXT PRIMARY KEY, secret_digest TEXT NOT NULL, scope TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS audit_events (
    id INTEGER PRIMARY KEY, occurred_at TEXT NOT NULL, event_type TEXT NOT NULL,
    outcome TEXT NOT NULL, severity TEXT NOT NULL, client_id TEXT, ip TEXT, user_agent TEXT,
    request_id TEXT, token_fingerprint TEXT, details TEXT NOT NULL, chain_seq INTEGER,
    chain_hash TEXT);
CREATE INDEX IF NOT EXISTS ix_client_id ON audit_events (client_id);
CREATE INDEX IF NOT EXISTS ix_event_type ON audit_events (event_type);
CREATE INDEX IF NOT EXISTS ix_occurred_at ON audit_events (occurred_at);
CREATE UNIQUE INDEX IF NOT EXISTS ix_chain_seq ON audit_events (chain_seq);
"""


def signing_jwk() -> dict[str, Any]:
    """A fresh private P-256 JWK for ``BENCH_JWK``."""
    key = ECKey.generate_key("P-256", {"kid": "layers-es256", "alg": "ES256"}, private=True)
    jwk: dict[str, Any] = key.as_dict(private=True)
    return jwk


def uses_database(layer: str) -> bool:
    """Whether ``layer`` reads and writes SQLite (and needs :func:`prepare_database`)."""
    return "sqlite" in layer


def _digest(secret: str) -> str:
    return hmac.new(_DIGEST_KEY, secret.encode(), hashlib.sha256).hexdigest()


def prepare_database(path: str, client_id: str, client_secret: str) -> None:
    """The SQLite layers' database: WAL, the two tables, the benchmark client."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(_SCHEMA)
        connection.execute(
            "INSERT OR REPLACE INTO oauth_clients VALUES (?, ?, ?, 0)",
            (client_id, _digest(client_secret), SCOPE),
        )
        connection.commit()
    finally:
        connection.close()


class Store:
    """The per-token database work of Echo's token endpoint, done with raw ``sqlite3``."""

    def __init__(self, path: str, *, flock: bool) -> None:
        self._path = path
        self._local = threading.local()
        self._lock = (
            os.open(f"{path}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600) if flock else None
        )

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self._path, isolation_level=None)
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=5000")
            self._local.connection = connection
        return connection

    def client(self, client_id: str) -> tuple[str, str] | None:
        """(secret digest, scope) of an enabled client."""
        row = (
            self._connection()
            .execute(
                "SELECT secret_digest, scope FROM oauth_clients "
                "WHERE client_id = ? AND disabled = 0",
                (client_id,),
            )
            .fetchone()
        )
        return None if row is None else (str(row[0]), str(row[1]))

    def audit(self, client_id: str, token: str, ip: str, user_agent: str) -> None:
        connection = self._connection()
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self._insert(connection, client_id, token, ip, user_agent)
        finally:
            if self._lock is not None:
                fcntl.flock(self._lock, fcntl.LOCK_UN)

    @staticmethod
    def _insert(
        connection: sqlite3.Connection, client_id: str, token: str, ip: str, user_agent: str
    ) -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "INSERT INTO audit_events (occurred_at, event_type, outcome, severity, client_id, "
            "ip, user_agent, request_id, token_fingerprint, details) "
            "VALUES (?, 'token.issued', 'success', 'info', ?, ?, ?, ?, ?, ?)",
            (
                time.strftime("%Y-%m-%d %H:%M:%S"),
                client_id,
                ip,
                user_agent,
                uuid.uuid4().hex,
                hashlib.sha256(token.encode()).hexdigest()[:12],
                json.dumps({"grant_type": "client_credentials", "scope": SCOPE}),
            ),
        )
        connection.execute("COMMIT")


class Signer:
    """RFC 9068 access tokens signed with one ES256 key, and its JWKS."""

    def __init__(self, issuer: str, private_jwk: dict[str, Any]) -> None:
        self.issuer = issuer
        self._key = ECKey.import_key(private_jwk)
        self.jwks = json.dumps({"keys": [self._key.as_dict(private=False)]}).encode()
        self.discovery = json.dumps(
            {"issuer": issuer, "jwks_uri": f"{issuer}/jwks", "token_endpoint": f"{issuer}/token"}
        ).encode()

    def access_token(self, client_id: str, scope: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": client_id,
            "aud": client_id,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": "ES256", "typ": "at+jwt", "kid": self._key.kid}
        token: str = jwt.encode(header, claims, self._key, algorithms=["ES256"])
        return token


def _json(start_response: StartResponse, status: str, body: Any, headers: Headers) -> list[bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(raw))), *headers],
    )
    return [raw]


def _static(
    signer: Signer, environ: dict[str, Any], start_response: StartResponse
) -> list[bytes] | None:
    """Discovery and JWKS, for the benchmark's token check."""
    path = environ.get("PATH_INFO", "")
    if path == "/.well-known/openid-configuration":
        return _json(start_response, "200 OK", signer.discovery, [])
    if path == "/jwks":
        return _json(start_response, "200 OK", signer.jwks, [])
    return None


def _form(environ: dict[str, Any]) -> dict[str, str]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return dict(parse_qsl(environ["wsgi.input"].read(length).decode()))


def _client_lookup(store: Store | None) -> Callable[[str], tuple[str, str] | None]:
    """(secret digest, scope) of a client: from ``store``, or the benchmark client in memory."""
    if store is not None:
        return store.client
    client_id = os.environ["BENCH_CLIENT_ID"]
    known = (_digest(os.environ["BENCH_CLIENT_SECRET"]), SCOPE)
    return lambda name: known if name == client_id else None


def _bare_wsgi(signer: Signer, store: Store | None) -> Callable[..., Iterable[bytes]]:
    lookup = _client_lookup(store)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        static = _static(signer, environ, start_response)
        if static is not None:
            return static
        form = _form(environ)
        basic = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Basic ")
        name, _, secret = base64.b64decode(basic).decode().partition(":")
        known = lookup(name)
        if known is None or not hmac.compare_digest(_digest(secret), known[0]):
            return _json(start_response, "401 Unauthorized", {"error": "invalid_client"}, [])
        if form.get("grant_type") != "client_credentials":
            return _json(start_response, "400 Bad Request", {"error": "unsupported_grant"}, [])
        token = signer.access_token(name, form.get("scope") or known[1])
        if store is not None:
            store.audit(
                name, token, environ.get("REMOTE_ADDR", ""), environ.get("HTTP_USER_AGENT", "")
            )
        body = {"access_token": token, "token_type": "Bearer", "expires_in": 600, "scope": SCOPE}
        return _json(start_response, "200 OK", body, [("Cache-Control", "no-store")])

    return app


def _authlib_parts(signer: Signer, store: Store | None) -> tuple[Any, Any]:
    """Authlib's client model and a token generator for it (Authlib imported late)."""
    from authlib.oauth2.rfc6749 import ClientMixin

    lookup = _client_lookup(store)

    class Client(ClientMixin):  # type: ignore[misc]
        def __init__(self, name: str, digest: str, scope: str) -> None:
            self.client_id, self._digest, self._scope = name, digest, scope

        def get_default_redirect_uri(self) -> None:
            return None

        def get_allowed_scope(self, scope: str | None) -> str:
            return scope or self._scope

        def check_redirect_uri(self, redirect_uri: str) -> bool:
            return False

        def check_client_secret(self, client_secret: str) -> bool:
            return hmac.compare_digest(_digest(client_secret), self._digest)

        def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
            return method == "client_secret_basic"

        def check_response_type(self, response_type: str) -> bool:
            return False

        def check_grant_type(self, grant_type: str) -> bool:
            return grant_type == "client_credentials"

    def query_client(name: str) -> Client | None:
        known = lookup(name)
        return None if known is None else Client(name, *known)

    def generate(client: Client, scope: str | None = None, **_: Any) -> dict[str, Any]:
        return {
            "token_type": "Bearer",
            "access_token": signer.access_token(client.client_id, scope or SCOPE),
            "expires_in": 600,
            "scope": scope or SCOPE,
        }

    return query_client, generate


def _flask_authlib(signer: Signer) -> Callable[..., Iterable[bytes]]:
    from authlib.integrations.flask_oauth2 import AuthorizationServer
    from authlib.oauth2.rfc6749 import grants
    from flask import Flask, Response

    query_client, generate = _authlib_parts(signer, None)
    app = Flask("stack_layers")
    server = AuthorizationServer(app, query_client=query_client, save_token=lambda t, r: None)
    server.register_token_generator("default", generate)
    server.register_grant(grants.ClientCredentialsGrant)

    @app.post("/token")
    def token() -> Response:
        response: Response = server.create_token_response()
        return response

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Response:
        return Response(signer.discovery, content_type="application/json")

    @app.get("/jwks")
    def jwks() -> Response:
        return Response(signer.jwks, content_type="application/json")

    return app


def _authlib_sqlite(signer: Signer, store: Store) -> Callable[..., Iterable[bytes]]:
    from authlib.oauth2 import AuthorizationServer
    from authlib.oauth2.rfc6749 import OAuth2Request, grants
    from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload

    query_client, generate = _authlib_parts(signer, store)

    class Request(OAuth2Request):  # type: ignore[misc]
        def __init__(self, environ: dict[str, Any], form: dict[str, str]) -> None:
            super().__init__("POST", signer.issuer + "/token", headers=_headers(environ))
            self.environ = environ
            self.payload = BasicOAuth2Payload(form)

        @property
        def form(self) -> dict[str, str]:
            data: dict[str, str] = self.payload.data
            return data

        @property
        def args(self) -> dict[str, str]:
            return {}

    class Server(AuthorizationServer):  # type: ignore[misc]
        def query_client(self, client_id: str) -> Any:
            return query_client(client_id)

        def save_token(self, token: dict[str, Any], request: Request) -> None:
            environ = request.environ
            store.audit(
                request.client.client_id,
                token["access_token"],
                environ.get("REMOTE_ADDR", ""),
                environ.get("HTTP_USER_AGENT", ""),
            )

        def create_oauth2_request(self, request: Request) -> Request:
            return request

        def handle_response(self, status: int, body: Any, headers: Headers) -> Any:
            return status, body, headers

        def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
            return None

    server = Server()
    server.register_token_generator("default", generate)
    server.register_grant(grants.ClientCredentialsGrant)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        static = _static(signer, environ, start_response)
        if static is not None:
            return static
        status, body, headers = server.create_token_response(Request(environ, _form(environ)))
        extra = [(name, value) for name, value in headers if name.lower() != "content-type"]
        return _json(start_response, f"{status} {HTTPStatus(status).phrase}", body, extra)

    return app


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": environ.get("HTTP_AUTHORIZATION", "")}


def build(layer: str) -> Callable[..., Iterable[bytes]]:
    signer = Signer(os.environ["BENCH_ISSUER"], json.loads(os.environ["BENCH_JWK"]))
    if layer not in LAYERS:
        raise SystemExit(f"unknown BENCH_LAYER {layer!r}; one of {', '.join(LAYERS)}")
    if layer == "flask_authlib":
        return _flask_authlib(signer)
    if not uses_database(layer):
        return _bare_wsgi(signer, None)
    store = Store(os.environ["BENCH_DATABASE"], flock=layer.endswith("_flock"))
    if layer.startswith("wsgi_"):
        return _bare_wsgi(signer, store)
    return _authlib_sqlite(signer, store)


if os.environ.get("BENCH_LAYER"):  # imported by a granian worker
    app = build(os.environ["BENCH_LAYER"])
