"""What runs around every request, through the real app factory (Flask test client): the rate
limiter only where a limit is declared, the browser session only where a cookie came or the
code uses it, the security headers, CSRF and the request counters, unchanged in behaviour."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient
from flask_limiter import Limiter
from prometheus_client.parser import text_string_to_metric_families

from echo_identity.app import create_app
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.web.headers import CONTENT_SECURITY_POLICY, HSTS
from tests.support.environment import app_environment, settings_for

RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
def app(settings: Settings, database: Database) -> Flask:
    return create_app(settings, database)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def limiter_checks(
    settings: Settings, database: Database
) -> Iterator[tuple[FlaskClient, mock.MagicMock]]:
    """A client of an app whose Flask-Limiter checks are counted (and still done)."""
    original = Limiter._check_request_limit
    with mock.patch.object(
        Limiter, "_check_request_limit", autospec=True, side_effect=original
    ) as check:
        yield create_app(settings, database).test_client(), check


def _varies_on_cookie(response: Any) -> bool:
    return "cookie" in {value.strip().lower() for value in response.headers.get_all("Vary")}


# Rate limits


def test_endpoints_without_a_declared_limit_run_no_flask_limiter_check(
    limiter_checks: tuple[FlaskClient, mock.MagicMock],
) -> None:
    client, check = limiter_checks

    token = client.post("/token", data={"grant_type": "client_credentials"})  # exempt
    jwks = client.get("/jwks")  # declares nothing
    missing = client.get("/no-such-page")

    assert (token.status_code, jwks.status_code, missing.status_code) == (401, 200, 404)
    assert check.call_count == 0
    for response in (token, jwks, missing):
        assert not [name for name in RATE_LIMIT_HEADERS if name in response.headers]


def test_limited_views_and_blueprints_are_still_checked_and_get_rate_limit_headers(
    limiter_checks: tuple[FlaskClient, mock.MagicMock],
) -> None:
    client, check = limiter_checks

    view = client.get("/api/v1/audit/events")  # @rate_limits.limit on the view
    blueprint = client.get("/api/v1/users/nobody/connections")  # limit_blueprint(api.bp)

    assert view.status_code == blueprint.status_code == 401
    assert check.call_count >= 2
    for response in (view, blueprint):
        assert response.headers["X-RateLimit-Limit"] == "10000"
        assert int(response.headers["X-RateLimit-Remaining"]) < 10000


def test_a_blueprint_limit_still_refuses_beyond_the_limit(
    tmp_path: Path, database: Database
) -> None:
    env = app_environment(
        tmp_path / "var", str(database.engine.url), ECHO_API_RATE_LIMIT="2/minute"
    )
    client = create_app(settings_for(env), database).test_client()

    statuses = [client.get("/api/v1/users/nobody/connections").status_code for _ in range(3)]

    assert statuses == [401, 401, 429]
    assert all(  # other endpoints are not limited
        client.post("/token", data={"grant_type": "client_credentials"}).status_code == 401
        for _ in range(3)
    )


# Browser session


def test_api_request_without_cookies_gets_no_session_cookie_and_no_vary(
    client: FlaskClient,
) -> None:
    for response in (
        client.post("/token", data={"grant_type": "client_credentials"}),
        client.get("/jwks"),
        client.get("/api/v1/audit/events"),
    ):
        assert not _varies_on_cookie(response)
        assert "Set-Cookie" not in response.headers


def test_cookies_that_are_not_ours_do_not_open_a_session(client: FlaskClient) -> None:
    client.set_cookie("theme", "dark")

    response = client.get("/jwks")

    assert not _varies_on_cookie(response)
    assert "Set-Cookie" not in response.headers


def test_a_page_that_reads_the_session_varies_on_cookie_without_one(client: FlaskClient) -> None:
    response = client.get("/account")  # reads the signed-in user: none, so to /login

    assert response.status_code == 302
    assert _varies_on_cookie(response)


def test_a_form_post_without_cookie_is_refused_by_csrf_and_varies_on_cookie(
    client: FlaskClient,
) -> None:
    # The token is checked against the session's secret: the answer depends on the session.
    response = client.post(
        "/login", data={"username": "bob", "password": "x", "csrf_token": "forged"}
    )

    assert response.status_code == 400
    assert b"csrf_failed" in response.data
    assert _varies_on_cookie(response)


def test_the_login_page_still_keeps_its_csrf_secret_in_the_anonymous_cookie(
    client: FlaskClient,
) -> None:
    response = client.get("/login")

    assert response.status_code == 200
    assert _varies_on_cookie(response)
    assert any(value.startswith("echo_anon=") for value in response.headers.get_all("Set-Cookie"))


def test_an_api_request_with_a_stale_session_cookie_still_varies_on_cookie(
    client: FlaskClient,
) -> None:
    client.set_cookie("echo_session", "echo_ss_not-a-session")

    response = client.get("/jwks")

    assert _varies_on_cookie(response)


# Security headers


def test_security_headers_keep_what_the_view_set_and_spare_static_files_no_store(
    tmp_path: Path, database: Database
) -> None:
    env = app_environment(tmp_path / "var", str(database.engine.url), production=True)
    app = create_app(settings_for(env), database)

    @app.get("/own-policy")
    def own_policy() -> Response:
        response = Response("ok")
        response.headers["Content-Security-Policy"] = "default-src 'none'"
        response.headers["Cache-Control"] = "private, max-age=60"
        return response

    client = app.test_client()
    page = client.get("/jwks", base_url="https://id.example.test")
    own = client.get("/own-policy", base_url="https://id.example.test")
    static = client.get("/static/style.css", base_url="https://id.example.test")
    static.close()

    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["Strict-Transport-Security"] == HSTS
    for name, value in (
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ):
        assert [page.headers.get(name), own.headers.get(name), static.headers.get(name)] == [
            value
        ] * 3
    assert own.headers.get_all("Content-Security-Policy") == ["default-src 'none'"]
    assert own.headers.get_all("Cache-Control") == ["private, max-age=60"]
    assert static.status_code == 200
    assert "no-store" not in static.headers.get("Cache-Control", "")
    assert static.headers["Strict-Transport-Security"] == HSTS


def test_development_responses_carry_no_hsts(client: FlaskClient) -> None:
    response = client.get("/jwks")

    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"]
    assert "Strict-Transport-Security" not in response.headers


# CSRF


def test_csrf_is_checked_on_forms_only_and_exemptions_hold_on_every_request(
    client: FlaskClient,
) -> None:
    assert client.get("/login").status_code == 200  # a GET has nothing to check
    for _ in range(2):  # the endpoint's exemption is worked out once, then remembered
        refused = client.post("/login", data={"username": "bob", "password": "x"})
        token = client.post("/token", data={"grant_type": "client_credentials"})
        assert refused.status_code == 400
        assert b"csrf_failed" in refused.data
        assert token.status_code == 401
        assert token.json is not None
        assert token.json["error"] == "invalid_client"


# Request counters


def _requests_counted(client: FlaskClient) -> dict[tuple[str, str, str], float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "echo_http_requests_total"
    }


def test_requests_are_counted_by_route_method_and_status(client: FlaskClient) -> None:
    before = _requests_counted(client)

    for _ in range(3):
        client.get("/jwks")
    client.post("/jwks")
    client.get("/api/v1/audit/events")
    client.get("/api/v1/audit/events", headers={"Authorization": "Bearer nope"})

    after = _requests_counted(client)

    def counted(method: str, route: str, status: str) -> float:
        key = (method, route, status)
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert counted("GET", "/jwks", "200") == 3
    assert counted("POST", "(unmatched)", "405") == 1
    assert counted("GET", "/api/v1/audit/events", "401") == 2
    assert counted("GET", "/metrics", "200") == 1  # the first scrape, counted by the second
