"""Idle and absolute session timeouts, through the app's real session interface."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from echo_identity.accounts.models import BrowserSession
from echo_identity.app import create_app
from echo_identity.config import Settings
from echo_identity.db import Database
from tests.factories import TestUser, create_user
from tests.support.browser import csrf_token


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
    store = app.extensions["echo.session_store"]
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
    abandoned = app.test_client()
    abandoned.get("/login")  # an anonymous session holding a CSRF token, never used again
    assert _stored_session_count(database) == 1
    clock.advance(seconds=settings.session_idle_timeout + 1)
    assert _stored_session_count(database) == 1  # nothing sweeps without traffic
    app.test_client().get("/login")
    assert _stored_session_count(database) == 1  # the abandoned one is gone, the new one stays


def _stored_session_count(database: Database) -> int:
    with database.session() as session:
        return len(session.scalars(select(BrowserSession.id)).all())
