"""Error rendering through the real app factory (Flask test client)."""

from __future__ import annotations

import pytest
from flask import Flask

from echo_identity.app import create_app
from echo_identity.config import Settings
from echo_identity.errors import EchoError


class TeapotError(EchoError):
    code = "teapot_refused"
    status = 418
    description = "No coffee here."


class ChallengingError(EchoError):
    code = "invalid_token"
    status = 401
    description = "The token is not valid."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@pytest.fixture
def app(settings: Settings) -> Flask:
    app = create_app(settings)

    @app.get("/api/v1/explode")
    def explode() -> str:
        raise RuntimeError("secret internals: password=hunter22")

    @app.get("/explode-page")
    def explode_page() -> str:
        raise RuntimeError("secret internals")

    @app.get("/api/v1/teapot")
    def teapot() -> str:
        raise TeapotError()

    @app.get("/api/v1/challenge")
    def challenge() -> str:
        raise ChallengingError()

    return app


def test_unexpected_api_error_is_json_500_without_internals(app: Flask) -> None:
    response = app.test_client().get("/api/v1/explode")
    assert response.status_code == 500
    assert response.json is not None
    assert response.json["error"] == "server_error"
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text


def test_unexpected_page_error_is_html_500_without_internals(app: Flask) -> None:
    response = app.test_client().get("/explode-page", headers={"Accept": "text/html"})
    assert response.status_code == 500
    assert response.mimetype == "text/html"
    assert "server_error" in response.text
    assert "secret internals" not in response.text


def test_domain_error_keeps_its_code_and_status(app: Flask) -> None:
    response = app.test_client().get("/api/v1/teapot")
    assert response.status_code == 418
    assert response.json == {
        "error": "teapot_refused",
        "error_description": "No coffee here.",
        "request_id": response.headers["X-Request-ID"],
    }


def test_debug_mode_stays_off_in_development(app: Flask, settings: Settings) -> None:
    assert settings.dev_mode
    assert not app.debug
    assert not app.config["PROPAGATE_EXCEPTIONS"]


def test_an_error_that_builds_headers_is_answered_with_them(app: Flask) -> None:
    response = app.test_client().get("/api/v1/challenge")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert response.json is not None
    assert response.json["error"] == "invalid_token"


def test_an_error_without_headers_adds_none(app: Flask) -> None:
    response = app.test_client().get("/api/v1/teapot")
    assert "WWW-Authenticate" not in response.headers
