"""Sign-in attempts are rate limited per client IP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database
from tests.factories import create_user
from tests.support.browser import Browser, csrf_token
from tests.support.environment import app_environment
from tests.support.oidc import client_credentials_token, service_client
from tests.support.server import start_server


def test_login_attempts_beyond_the_limit_get_429_with_retry_after(
    tmp_path: Path, database_url: str
) -> None:
    env = app_environment(tmp_path / "var", database_url, ECHO_LOGIN_RATE_LIMIT="3/minute")
    server = start_server(env, tmp_path / "server.log")
    try:
        user = create_user(database_url)
        browser = Browser(server)
        statuses = [browser.login(user.username, "wrong-password").status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        blocked = browser.login(user.username, user.password)
        assert blocked.status_code == 429
        assert "rate_limited" in blocked.text
        assert int(blocked.headers["retry-after"]) > 0
        assert browser.get("/account").status_code == 302  # the right password did not get in
        assert browser.get("/login").status_code == 200  # viewing the form is not limited
    finally:
        server.stop()


def test_failed_token_requests_are_limited_but_successful_ones_never_count(
    tmp_path: Path, database_url: str
) -> None:
    env = app_environment(tmp_path / "var", database_url, ECHO_TOKEN_FAILURE_RATE_LIMIT="3/minute")
    server = start_server(env, tmp_path / "server.log")
    try:
        client = service_client(server)
        for _ in range(6):  # more successes than the failure limit allows
            client_credentials_token(server, client)
        wrong = [
            httpx.post(
                f"{server.base_url}/token",
                data={"grant_type": "client_credentials"},
                auth=(client.client_id, "wrong"),
            ).status_code
            for _ in range(3)
        ]
        assert wrong == [401, 401, 401]
        blocked = httpx.post(
            f"{server.base_url}/token",
            data={"grant_type": "client_credentials"},
            auth=(client.client_id, client.client_secret or ""),
        )
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
    finally:
        server.stop()


def test_service_api_calls_beyond_the_limit_get_429(tmp_path: Path, database_url: str) -> None:
    env = app_environment(tmp_path / "var", database_url, ECHO_API_RATE_LIMIT="3/minute")
    server = start_server(env, tmp_path / "server.log")
    try:
        statuses = [
            httpx.get(f"{server.base_url}/api/v1/users/nobody/connections").status_code
            for _ in range(4)
        ]
    finally:
        server.stop()
    assert statuses == [401, 401, 401, 429]


@pytest.mark.parametrize("page", ["/account/export", "/account/delete"])
def test_password_checks_on_the_export_and_delete_pages_beyond_the_limit_get_429_and_are_recorded(
    tmp_path: Path, database_url: str, page: str
) -> None:
    env = app_environment(tmp_path / "var", database_url, ECHO_LOGIN_RATE_LIMIT="3/minute")
    server = start_server(env, tmp_path / "server.log")
    try:
        user = create_user(database_url)
        browser = Browser(server)
        assert browser.login(user.username, user.password).status_code == 302
        form = {"current_password": "wrong-password", "confirm_username": user.username}
        csrf = csrf_token(browser.get(page).text)
        statuses = [browser.post(page, {"csrf_token": csrf, **form}).status_code for _ in range(4)]
        assert 429 not in statuses[:3]
        assert statuses[3] == 429  # the guesser behind a session is stopped like at /login
        database = Database(database_url)
        try:
            with database.read_session() as session:
                locked = session.scalars(
                    select(AuditEvent.event_type).where(
                        AuditEvent.event_type == "auth.login.locked"
                    )
                ).all()
        finally:
            database.dispose()
        assert len(locked) == 1
    finally:
        server.stop()
