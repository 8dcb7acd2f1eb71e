"""Browser sessions through the app's real session interface: idle and absolute timeouts, and
the anonymous session that lives in a signed cookie (no stored row until someone signs in)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from secrets import token_hex
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select

from echo_identity.accounts.models import BrowserSession
from echo_identity.accounts.session_cookie import (
    ANONYMOUS_DEVELOPMENT_COOKIE,
    ANONYMOUS_PRODUCTION_COOKIE,
    DEVELOPMENT_COOKIE,
    MAX_ANONYMOUS_COOKIE,
)
from echo_identity.app import create_app
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.web.context import services_of
from tests.factories import TestUser, create_user
from tests.support.browser import csrf_token
from tests.support.environment import app_environment, settings_for


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("echo_identity.accounts.session_cookie.utcnow", clock)
    monkeypatch.setattr("echo_identity.accounts.sessions.utcnow", clock)
    return clock


@pytest.fixture
def app(settings: Settings, database: Database, clock: Clock) -> Flask:
    return create_app(settings, database)


@pytest.fixture
def user(database: Database) -> TestUser:
    return create_user(database)


def _sign_in(client: FlaskClient, user: TestUser) -> None:
    token = csrf_token(client.get("/login").text)
    response = client.post(
        "/login", data={"csrf_token": token, "username": user.username, "password": user.password}
    )
    assert response.status_code == 302


def _signed_in(client: FlaskClient) -> bool:
    return client.get("/account").status_code == 200


def test_session_ends_after_the_idle_timeout(
    app: Flask, user: TestUser, clock: Clock, settings: Settings
) -> None:
    client = app.test_client()
    _sign_in(client, user)
    clock.advance(seconds=settings.session_idle_timeout - 5)
    assert _signed_in(client)
    clock.advance(seconds=settings.session_idle_timeout + 1)
    assert not _signed_in(client)


def test_activity_keeps_a_session_alive_until_the_absolute_timeout(
    app: Flask, user: TestUser, clock: Clock, settings: Settings
) -> None:
    client = app.test_client()
    _sign_in(client, user)
    step = settings.session_idle_timeout / 2
    elapsed = 0.0
    while elapsed + step < settings.session_absolute_timeout:
        clock.advance(seconds=step)
        elapsed += step
        assert _signed_in(client), f"signed out after {elapsed} s of activity"
    clock.advance(seconds=step)
    assert not _signed_in(client)


def test_expired_session_is_deleted_from_the_store(
    app: Flask, user: TestUser, clock: Clock, settings: Settings
) -> None:
    client = app.test_client()
    _sign_in(client, user)
    store = services_of(app).sessions
    assert len(store.for_user(user.id)) == 1
    clock.advance(seconds=settings.session_idle_timeout + 1)
    client.get("/account")
    clock.now -= timedelta(seconds=settings.session_idle_timeout + 1)  # look from before expiry
    assert store.for_user(user.id) == []


def test_abandoned_sessions_are_swept_when_new_sessions_are_made(
    database: Database, clock: Clock, settings: Settings
) -> None:
    # The database store needs sweeping; Redis expires keys by itself.
    app = create_app(settings.model_copy(update={"redis_url": None}), database)
    first, second = create_user(database), create_user(database)
    _sign_in(app.test_client(), first)  # a signed-in browser never seen again
    assert _stored_session_count(database) == 1
    clock.advance(seconds=settings.session_idle_timeout + 1)
    assert _stored_session_count(database) == 1  # nothing sweeps without traffic
    _sign_in(app.test_client(), second)
    assert _stored_session_count(database) == 1  # the abandoned one is gone, the new one stays


def _stored_session_count(database: Database) -> int:
    with database.session() as session:
        return len(session.scalars(select(BrowserSession.id)).all())


# --- The anonymous session: a signed cookie, never a row -----------------------------------


def _stored_state(app: Flask, database: Database) -> int:
    """Stored browser sessions: database rows, or every Redis key of this app (Redis suite)."""
    settings: Settings = services_of(app).settings
    if not settings.redis_url:
        return _stored_session_count(database)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return len(list(client.scan_iter(match=f"{settings.redis_namespace}*")))
    finally:
        client.close()


def _anonymous_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie(ANONYMOUS_DEVELOPMENT_COOKIE)
    assert cookie is not None, "no anonymous session cookie"
    return cookie.value


def _serializer(app: Flask, key: bytes | None = None) -> URLSafeTimedSerializer:
    """The anonymous cookie's serializer as the app builds it (or with another ``key``)."""
    return URLSafeTimedSerializer(
        key or app.secret_key or b"",
        salt="echo-identity.anonymous-session",
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
    )


def _sign(app: Flask, data: Any, *, key: bytes | None = None) -> str:
    return _serializer(app, key).dumps(data)


def _unsign(app: Flask, value: str) -> dict[str, Any]:
    data: dict[str, Any] = _serializer(app).loads(value)
    return data


def _csrf_accepted(client: FlaskClient, token: str, user: TestUser) -> bool:
    response = client.post(
        "/login", data={"csrf_token": token, "username": user.username, "password": user.password}
    )
    return response.status_code == 302


def test_anonymous_pages_store_no_session_however_often_they_are_loaded(
    app: Flask, database: Database, user: TestUser
) -> None:
    before = _stored_state(app, database)
    for _ in range(40):
        assert app.test_client().get("/login").status_code == 200
    assert _stored_state(app, database) == before
    client = app.test_client()
    _sign_in(client, user)  # the first moment a server-side session is needed
    assert _stored_state(app, database) > before


def test_the_anonymous_cookie_is_httponly_lax_and_expires_with_the_idle_timeout(
    app: Flask, settings: Settings
) -> None:
    response = app.test_client().get("/login")
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("echo_anon=")]
    attributes = {part.strip().lower() for part in header.split(";")[1:]}
    assert {"httponly", "samesite=lax", "path=/"} <= attributes
    assert f"max-age={settings.session_idle_timeout}" in attributes
    assert len(header) < MAX_ANONYMOUS_COOKIE
    assert not any(
        h.startswith(f"{DEVELOPMENT_COOKIE}=") for h in response.headers.getlist("Set-Cookie")
    )


def test_signing_in_replaces_the_anonymous_cookie_with_a_stored_session(
    app: Flask, user: TestUser
) -> None:
    client = app.test_client()
    _sign_in(client, user)
    assert client.get_cookie(ANONYMOUS_DEVELOPMENT_COOKIE) is None
    assert client.get_cookie(DEVELOPMENT_COOKIE) is not None
    assert _signed_in(client)


def test_the_anonymous_cookie_carries_the_csrf_secret_across_requests(
    app: Flask, user: TestUser
) -> None:
    client = app.test_client()
    token = csrf_token(client.get("/login").text)
    client.get("/login")  # another page view keeps the same secret
    assert _csrf_accepted(client, token, user)


def test_a_tampered_anonymous_cookie_is_ignored(app: Flask, user: TestUser) -> None:
    client = app.test_client()
    token = csrf_token(client.get("/login").text)
    value = _anonymous_cookie(client)
    payload, _, signature = value.rpartition(".")
    # The first character: all six of its bits are signature bits (the last one's low bits are
    # base64 padding, so changing only those would leave the signature intact).
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    client.set_cookie(ANONYMOUS_DEVELOPMENT_COOKIE, f"{payload}.{flipped}")
    assert not _csrf_accepted(client, token, user)  # the CSRF secret it held is gone


@pytest.mark.parametrize("how", ["another key", "too large", "not a dict", "not base64"])
def test_anonymous_cookies_the_app_did_not_sign_as_they_are_ignored(
    app: Flask, user: TestUser, how: str
) -> None:
    client = app.test_client()
    token = csrf_token(client.get("/login").text)
    genuine = _anonymous_cookie(client)
    secret = _unsign(app, genuine)["csrf_token"]  # were the forgery read, the CSRF check passed
    forged = {
        "another key": _sign(app, {"csrf_token": secret}, key=b"k" * 32),
        "too large": _sign(app, {"csrf_token": secret, "pad": token_hex(MAX_ANONYMOUS_COOKIE)}),
        "not a dict": _sign(app, [secret]),
        "not base64": "%%%." + genuine,
    }[how]
    client.set_cookie(ANONYMOUS_DEVELOPMENT_COOKIE, forged)
    assert client.get("/login").status_code == 200  # a fresh anonymous session, not a 500
    client.set_cookie(ANONYMOUS_DEVELOPMENT_COOKIE, forged)
    assert not _csrf_accepted(client, token, user)


def test_an_expired_anonymous_cookie_is_ignored(
    app: Flask, user: TestUser, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app.test_client()
    token = csrf_token(client.get("/login").text)
    later = int(time.time()) + settings.session_idle_timeout + 5  # the form token still lives
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: later)
    assert not _csrf_accepted(client, token, user)


def test_an_anonymous_cookie_is_re_signed_so_an_active_visitor_keeps_it(
    app: Flask, user: TestUser, settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app.test_client()
    start = int(time.time())
    clock.now = datetime.fromtimestamp(start, UTC)
    token = csrf_token(client.get("/login").text)
    for step in (1, 2):  # two page views, each two thirds of the idle timeout apart
        at = start + step * settings.session_idle_timeout * 2 // 3
        monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self, at=at: at)
        clock.now = datetime.fromtimestamp(at, UTC)
        assert client.get("/login").status_code == 200
    assert _csrf_accepted(client, token, user)


def test_no_anonymous_cookie_ever_authenticates_anyone(app: Flask, user: TestUser) -> None:
    # Even signed with the app's own key, data claiming a user is only data: the user id is
    # read from a server-side record, never from this cookie.
    client = app.test_client()
    claims = {"user_id": user.id, "_user_id": str(user.id), "auth_time": int(time.time())}
    client.set_cookie(ANONYMOUS_DEVELOPMENT_COOKIE, _sign(app, claims))
    assert not _signed_in(client)
    # Nor is a signed-in browser's login cookie accepted under the anonymous name, or back.
    signed_in = app.test_client()
    _sign_in(signed_in, user)
    login_cookie = signed_in.get_cookie(DEVELOPMENT_COOKIE)
    assert login_cookie is not None
    swapped = app.test_client()
    swapped.set_cookie(ANONYMOUS_DEVELOPMENT_COOKIE, login_cookie.value)
    assert not _signed_in(swapped)
    anonymous = app.test_client()
    anonymous.get("/login")
    swapped.set_cookie(DEVELOPMENT_COOKIE, _anonymous_cookie(anonymous))
    assert not _signed_in(swapped)


def test_after_logout_the_browser_is_anonymous_again_without_a_stored_row(
    app: Flask, database: Database, user: TestUser
) -> None:
    client = app.test_client()
    _sign_in(client, user)
    stored = _stored_state(app, database)
    page = client.get("/account").text
    response = client.post("/logout", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302
    assert client.get_cookie(DEVELOPMENT_COOKIE) is None
    assert not _signed_in(client)
    client.get("/login")
    assert _stored_state(app, database) < stored


def test_production_names_the_anonymous_cookie_host_prefixed_and_secure(
    tmp_path: Path, database_url: str, database: Database
) -> None:
    env = app_environment(tmp_path / "prod", database_url, production=True)
    app = create_app(settings_for(env), database)
    response = app.test_client().get(
        "/login", base_url="https://id.example.test", headers={"X-Forwarded-Proto": "https"}
    )
    cookies = response.headers.getlist("Set-Cookie")
    [header] = [h for h in cookies if h.startswith(f"{ANONYMOUS_PRODUCTION_COOKIE}=")]
    attributes = {part.strip().lower().split("=")[0] for part in header.split(";")[1:]}
    assert {"secure", "httponly", "samesite", "path", "max-age"} <= attributes
    assert "domain" not in attributes  # the __Host- prefix forbids Domain
    assert not [h for h in cookies if h.startswith(f"{ANONYMOUS_DEVELOPMENT_COOKIE}=")]
