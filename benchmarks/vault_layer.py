"""The vault fresh-token call without the framework: the ceiling for ``vault_handout.py``.

Not Echo Identity and not for use. A bare WSGI callable answers
``POST /api/v1/users/<sub>/connections/<provider>/token`` doing the work Echo's hand-out does
when no refresh is needed, as cheaply as the same libraries allow, and nothing else:

1. the bearer token: an RFC 9068 ES256 JWT verified with joserfc (``typ`` ``at+jwt``, ``iss``,
   ``exp``, ``iat``, the API audience in ``aud``, ``vault:read`` in ``scope``);
2. the body: JSON ``{"min_ttl": …, "force_refresh": …}`` (empty means the defaults);
3. the database (raw ``sqlite3``, WAL, ``synchronous=NORMAL``, one connection per thread), the
   reads Echo's checks need: the token not revoked and its client enabled and registered for
   the provider (one query); the user enabled, their active consent naming the client and the
   connection row (one query); the data key the ciphertext names (one query);
4. the envelope: the user's data key unwrapped with the KEK, then the access token decrypted,
   both AES-256-GCM (``cryptography``) in Echo's format (version, key id, nonce; the header and
   the row's context as associated data) — see ``echo_identity.crypto.aead`` and ``keys/``;
5. one ``vault.token.read`` audit row (the user as an HMAC pseudonym, the token as a
   fingerprint) inserted and committed (``BEGIN IMMEDIATE``), before the answer. With
   ``BENCH_FLOCK=1`` the writers of all workers first queue on an exclusive ``flock`` of a
   lock file beside the database (as ``stack_layers.py``'s ``*_flock`` layers): the kernel
   wakes the next writer as soon as the lock is free, where SQLite's busy handler sleeps
   1, 2, 5, 10 … ms between retries, which is what makes a bare writer's p99;
6. the JSON Echo answers: ``access_token``, ``token_type``, ``expires_at``, ``scope``.

granian serves ``vault_layer:app``; ``BENCH_ISSUER``, ``BENCH_AUDIENCE``, ``BENCH_JWK`` (the
public verification JWK), ``BENCH_KEK`` (base64url, 32 bytes), ``BENCH_PSEUDONYM_KEY``,
``BENCH_DATABASE`` and ``BENCH_FLOCK`` configure it. :func:`prepare_database` makes the
database, with one user, client, provider, consent and connection, before the workers start.
``GET /readyz`` answers 200 once a worker is up.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

SCOPE = "vault:read"
PATH_PREFIX = "/api/v1/users/"
MAX_MIN_TTL = 3600
FORMAT_VERSION = 1
NONCE_SIZE = 12

StartResponse = Callable[..., Any]

_SCHEMA = """
CREATE TABLE oauth_clients (
    client_id TEXT PRIMARY KEY, disabled INTEGER NOT NULL DEFAULT 0,
    vault_providers TEXT NOT NULL DEFAULT '[]');
CREATE TABLE revoked_access_tokens (jti TEXT PRIMARY KEY, expires_at TEXT NOT NULL);
CREATE TABLE users (
    id INTEGER PRIMARY KEY, sub TEXT NOT NULL UNIQUE, disabled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE vault_providers (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE vault_consents (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users (id),
    provider_name TEXT NOT NULL, client_ids TEXT NOT NULL, withdrawn_at TEXT);
CREATE INDEX ix_vault_consents_user_id ON vault_consents (user_id);
CREATE TABLE data_keys (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, kek_id TEXT NOT NULL,
    wrapped_key BLOB NOT NULL, retired_at TEXT);
CREATE TABLE vault_connections (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users (id),
    provider_id INTEGER NOT NULL REFERENCES vault_providers (id),
    status TEXT NOT NULL, access_token_ciphertext BLOB, token_type TEXT NOT NULL,
    scope TEXT NOT NULL, expires_at TEXT, UNIQUE (user_id, provider_id));
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY, occurred_at TEXT NOT NULL, event_type TEXT NOT NULL,
    outcome TEXT NOT NULL, severity TEXT NOT NULL, actor TEXT, subject TEXT, client_id TEXT,
    ip TEXT, user_agent TEXT, request_id TEXT, token_fingerprint TEXT, details TEXT NOT NULL,
    chain_seq INTEGER, chain_hash TEXT);
CREATE INDEX ix_audit_client_id ON audit_events (client_id);
CREATE INDEX ix_audit_event_type ON audit_events (event_type);
CREATE INDEX ix_audit_occurred_at ON audit_events (occurred_at);
CREATE UNIQUE INDEX ix_audit_chain_seq ON audit_events (chain_seq);
"""

_ACCESS_QUERY = (
    "SELECT c.disabled, c.vault_providers, "
    "EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = ?) "
    "FROM oauth_clients c WHERE c.client_id = ?"
)
_CONNECTION_QUERY = (
    "SELECT u.disabled, cs.client_ids, v.id, v.status, v.access_token_ciphertext, "
    "v.token_type, v.scope, v.expires_at "
    "FROM users u "
    "JOIN vault_providers p ON p.name = ? "
    "LEFT JOIN vault_consents cs ON cs.user_id = u.id AND cs.provider_name = p.name "
    "AND cs.withdrawn_at IS NULL "
    "LEFT JOIN vault_connections v ON v.user_id = u.id AND v.provider_id = p.id "
    "WHERE u.sub = ?"
)
_DATA_KEY_QUERY = "SELECT owner, kek_id, wrapped_key FROM data_keys WHERE id = ?"
_AUDIT_INSERT = (
    "INSERT INTO audit_events (occurred_at, event_type, outcome, severity, subject, client_id, "
    "ip, user_agent, request_id, token_fingerprint, details) "
    "VALUES (?, 'vault.token.read', 'success', 'info', ?, ?, ?, ?, ?, ?, ?)"
)


# --- the envelope format of echo_identity.crypto.aead, with cryptography directly ----------


def seal(key: bytes, key_id: str, plaintext: bytes, context: str) -> bytes:
    """``plaintext`` under ``key``: version, key-id length, key id, nonce, ciphertext + tag; the
    header and ``context`` are the associated data."""
    raw_id = key_id.encode("ascii")
    header = bytes((FORMAT_VERSION, len(raw_id))) + raw_id + os.urandom(NONCE_SIZE)
    return header + AESGCM(key).encrypt(header[-NONCE_SIZE:], plaintext, header + context.encode())


def key_id_of(ciphertext: bytes) -> str:
    """The key id in a ciphertext's header; raises ``ValueError`` for a malformed one."""
    if len(ciphertext) < 2 or ciphertext[0] != FORMAT_VERSION:
        raise ValueError("not an envelope ciphertext")
    return ciphertext[2 : 2 + ciphertext[1]].decode("ascii")


def open_sealed(key: bytes, ciphertext: bytes, context: str) -> bytes:
    """The plaintext of :func:`seal`'s ``ciphertext``; raises ``InvalidTag`` or ``ValueError``."""
    split = 2 + ciphertext[1] + NONCE_SIZE
    header = ciphertext[:split]
    return AESGCM(key).decrypt(header[-NONCE_SIZE:], ciphertext[split:], header + context.encode())


def kek_id(kek: bytes) -> str:
    return "local:" + hashlib.sha256(b"echo-identity kek id" + kek).hexdigest()[:16]


def _wrap_context(key_id: str, owner: str) -> str:
    return f"dek:data_key:{key_id}:{owner}"


def _token_context(connection_id: int) -> str:
    return f"connection:{connection_id}:access_token"


def _pseudonym(key: bytes, sub: str) -> str:
    return hmac.new(key, sub.encode(), hashlib.sha256).hexdigest()[:32]


def verification_jwk(private_jwk: dict[str, Any]) -> dict[str, Any]:
    """The public half of ``private_jwk``, for ``BENCH_JWK``."""
    public: dict[str, Any] = ECKey.import_key(private_jwk).as_dict(private=False)
    return public


def prepare_database(
    path: str,
    *,
    kek: bytes,
    client_id: str,
    sub: str,
    provider: str,
    access_token: str,
    expires_at: datetime,
) -> None:
    """The layer's database: WAL, the tables, and one user ``sub`` whose connection to
    ``provider`` holds ``access_token`` (encrypted under the user's data key, wrapped by
    ``kek``), with an active consent naming ``client_id``, which is registered for it."""
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:  # commits
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(_SCHEMA)
        connection.execute(
            "INSERT INTO oauth_clients (client_id, vault_providers) VALUES (?, ?)",
            (client_id, json.dumps([provider])),
        )
        user_id = connection.execute("INSERT INTO users (sub) VALUES (?)", (sub,)).lastrowid
        provider_id = connection.execute(
            "INSERT INTO vault_providers (name) VALUES (?)", (provider,)
        ).lastrowid
        connection.execute(
            "INSERT INTO vault_consents (user_id, provider_name, client_ids) VALUES (?, ?, ?)",
            (user_id, provider, json.dumps([client_id])),
        )
        owner, data_key_id, dek = f"user:{user_id}", secrets.token_hex(16), os.urandom(32)
        wrapped = seal(kek, kek_id(kek), dek, _wrap_context(data_key_id, owner))
        connection.execute(
            "INSERT INTO data_keys (id, owner, kek_id, wrapped_key) VALUES (?, ?, ?, ?)",
            (data_key_id, owner, kek_id(kek), wrapped),
        )
        connection_id = connection.execute(
            "INSERT INTO vault_connections (user_id, provider_id, status, token_type, scope, "
            "expires_at) VALUES (?, ?, 'active', 'Bearer', 'repo read:user', ?)",
            (user_id, provider_id, expires_at.isoformat()),
        ).lastrowid
        assert connection_id is not None
        connection.execute(
            "UPDATE vault_connections SET access_token_ciphertext = ? WHERE id = ?",
            (
                seal(dek, data_key_id, access_token.encode(), _token_context(connection_id)),
                connection_id,
            ),
        )


class RefusedError(Exception):
    """A refused call: its status line and error code."""

    def __init__(self, status: str, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


class VaultLayer:
    """The WSGI callable (one per worker process; connections are per thread)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        public_jwk: dict[str, Any],
        kek: bytes,
        pseudonym_key: bytes,
        database: str,
        flock: bool = False,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._key = ECKey.import_key(public_jwk)
        self._keks = {kek_id(kek): kek}
        self._pseudonym_key = pseudonym_key
        self._database = database
        self._local = threading.local()
        self._lock = (
            os.open(f"{database}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600) if flock else None
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/readyz":
            return _json(start_response, "200 OK", {"status": "ok"})
        method = environ.get("REQUEST_METHOD", "")
        parts = path.removeprefix(PATH_PREFIX).split("/")
        if (
            method != "POST"
            or not path.startswith(PATH_PREFIX)
            or len(parts) != 4
            or parts[1] != "connections"
            or parts[3] != "token"
        ):
            return _json(start_response, "404 Not Found", {"error": "not_found"})
        try:
            body = self.fresh_token(environ, sub=parts[0], provider=parts[2])
        except RefusedError as refusal:
            return _json(start_response, refusal.status, {"error": refusal.code})
        return _json(start_response, "200 OK", body)

    def fresh_token(self, environ: dict[str, Any], *, sub: str, provider: str) -> dict[str, Any]:
        """The answer to one call; raises :class:`RefusedError`."""
        claims = self._bearer(environ)
        min_ttl = _min_ttl(environ)
        database = self._connection()
        client_id = str(claims["client_id"])
        access = database.execute(_ACCESS_QUERY, (claims["jti"], client_id)).fetchone()
        if access is None or access[0] or access[2]:
            raise RefusedError("401 Unauthorized", "invalid_token")
        if provider not in json.loads(access[1]):
            raise RefusedError("403 Forbidden", "access_denied")
        row = database.execute(_CONNECTION_QUERY, (provider, sub)).fetchone()
        if row is None or row[0] or row[1] is None or client_id not in json.loads(row[1]):
            raise RefusedError("403 Forbidden", "access_denied")
        connection_id, status, ciphertext, token_type, scope, expires_at = row[2:]
        if ciphertext is None:
            raise RefusedError("404 Not Found", "connection_not_found")
        if status != "active" or datetime.fromisoformat(expires_at).timestamp() - min_ttl < (
            time.time()
        ):
            raise RefusedError("409 Conflict", "needs_reauth")  # no refresh in this layer
        try:
            plain = self._decrypt(database, ciphertext, _token_context(connection_id))
        except (InvalidTag, ValueError, KeyError):
            raise RefusedError("500 Internal Server Error", "stored_token_unreadable") from None
        self._audit(database, environ, sub, client_id, plain, provider)
        return {
            "access_token": plain,
            "token_type": token_type,
            "expires_at": expires_at,
            "scope": scope,
        }

    def _bearer(self, environ: dict[str, Any]) -> dict[str, Any]:
        """The claims of the request's bearer token; raises :class:`RefusedError`."""
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise RefusedError("401 Unauthorized", "invalid_request")
        try:
            decoded = jwt.decode(token, self._key, algorithms=["ES256"])
        except (JoseError, ValueError):
            raise RefusedError("401 Unauthorized", "invalid_token") from None
        claims, now = decoded.claims, time.time()
        audience = claims.get("aud")
        held = {audience} if isinstance(audience, str) else set(audience or ())
        if (
            str(decoded.header.get("typ", "")).lower() not in {"at+jwt", "application/at+jwt"}
            or claims.get("iss") != self._issuer
            or not isinstance(claims.get("exp"), int | float)
            or claims["exp"] <= now
            or not isinstance(claims.get("iat"), int | float)
            or claims["iat"] > now + 30
            or self._audience not in held
            or not all(isinstance(claims.get(name), str) for name in ("sub", "client_id", "jti"))
        ):
            raise RefusedError("401 Unauthorized", "invalid_token")
        if SCOPE not in str(claims.get("scope", "")).split():
            raise RefusedError("403 Forbidden", "insufficient_scope")
        return dict(claims)

    def _decrypt(self, database: sqlite3.Connection, ciphertext: bytes, context: str) -> str:
        key_id = key_id_of(ciphertext)
        data_key = database.execute(_DATA_KEY_QUERY, (key_id,)).fetchone()
        if data_key is None:
            raise KeyError(key_id)
        owner, wrapped_by, wrapped = data_key
        dek = open_sealed(self._keks[wrapped_by], wrapped, _wrap_context(key_id, owner))
        return open_sealed(dek, ciphertext, context).decode()

    def _audit(
        self,
        database: sqlite3.Connection,
        environ: dict[str, Any],
        sub: str,
        client_id: str,
        token: str,
        provider: str,
    ) -> None:
        pseudonym = _pseudonym(self._pseudonym_key, sub)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self._insert(database, environ, pseudonym, client_id, token, provider)
        finally:
            if self._lock is not None:
                fcntl.flock(self._lock, fcntl.LOCK_UN)

    @staticmethod
    def _insert(
        database: sqlite3.Connection,
        environ: dict[str, Any],
        pseudonym: str,
        client_id: str,
        token: str,
        provider: str,
    ) -> None:
        database.execute("BEGIN IMMEDIATE")
        try:
            database.execute(
                _AUDIT_INSERT,
                (
                    datetime.now(UTC).isoformat(sep=" "),
                    pseudonym,
                    client_id,
                    environ.get("REMOTE_ADDR", "")[:45],
                    environ.get("HTTP_USER_AGENT", "")[:512] or None,
                    uuid.uuid4().hex,
                    hashlib.sha256(token.encode()).hexdigest()[:12],
                    json.dumps({"provider": provider, "refreshed": False}),
                ),
            )
        except BaseException:
            database.execute("ROLLBACK")
            raise
        database.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self._database, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=5000")
            self._local.connection = connection
        return connection


def _min_ttl(environ: dict[str, Any]) -> int:
    """``min_ttl`` of the JSON body (default 60); raises :class:`RefusedError`."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise RefusedError("400 Bad Request", "invalid_json") from None
    if not isinstance(body, dict) or not set(body) <= {"min_ttl", "force_refresh"}:
        raise RefusedError("400 Bad Request", "invalid_request")
    min_ttl = body.get("min_ttl", 60)
    if (
        isinstance(min_ttl, bool)
        or not isinstance(min_ttl, int | float)
        or not 0 <= min_ttl <= MAX_MIN_TTL
        or body.get("force_refresh", False) is not False
    ):
        raise RefusedError("400 Bad Request", "invalid_request")
    return int(min_ttl)


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    raw = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(raw))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [raw]


def build() -> VaultLayer:
    """The layer configured by the ``BENCH_*`` environment."""
    return VaultLayer(
        issuer=os.environ["BENCH_ISSUER"],
        audience=os.environ["BENCH_AUDIENCE"],
        public_jwk=json.loads(os.environ["BENCH_JWK"]),
        kek=base64.urlsafe_b64decode(os.environ["BENCH_KEK"]),
        pseudonym_key=base64.urlsafe_b64decode(os.environ["BENCH_PSEUDONYM_KEY"]),
        database=os.environ["BENCH_DATABASE"],
        flock=os.environ.get("BENCH_FLOCK") == "1",
    )


if os.environ.get("BENCH_DATABASE"):  # imported by a granian worker
    app = build()
