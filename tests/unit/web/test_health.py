"""Readiness reflects every store; a store outage fails requests closed with a clean 503."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from flask import Flask
from sqlalchemy.exc import OperationalError

from echo_identity.accounts.session_cookie import current_session
from echo_identity.app import create_app
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.services import build_services
from echo_identity.web.csrf import csrf
from echo_identity.web.health import Readiness, StoreProbe
from tests.support.environment import settings_for
from tests.support.server import free_port

UNREACHABLE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=1"


def _closed_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


@pytest.fixture
def redis_down_app(app_env: dict[str, str], database: Database) -> Flask:
    """An app whose sessions and rate limits live in a Redis that does not answer."""
    settings = settings_for({**app_env, "ECHO_REDIS_URL": _closed_redis_url()})
    app = create_app(settings, database)

    @app.post("/test-sign-in")
    @csrf.exempt
    def sign_in() -> str:  # the session is written after the view: outside its error handling
        current_session().start_login(1)
        return "signed in"

    return app


def test_readyz_is_503_naming_the_database_when_it_does_not_answer(settings: Settings) -> None:
    unreachable = Database(UNREACHABLE_DATABASE)
    app = create_app(settings, unreachable)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["status"] == "unavailable"
    assert response.json["checks"]["database"] == "unavailable"
    unreachable.dispose()


def test_readyz_is_503_naming_redis_when_it_is_configured_and_down(
    app_env: dict[str, str], database: Database
) -> None:
    url = _closed_redis_url()
    app = create_app(settings_for({**app_env, "ECHO_REDIS_URL": url}), database)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "unavailable"},
    }
    assert url.split("//")[1].split("/")[0] not in response.text  # no address leaks


def test_healthz_does_not_depend_on_the_database(settings: Settings) -> None:
    unreachable = Database(UNREACHABLE_DATABASE)
    app = create_app(settings, unreachable)
    assert app.test_client().get("/healthz").status_code == 200
    unreachable.dispose()


def test_readyz_is_200_on_a_reachable_database(settings: Settings, database: Database) -> None:
    response = create_app(settings, database).test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json is not None
    assert response.json["status"] == "ready"
    assert response.json["checks"]["database"] == "ok"  # (and Redis in the Redis suite)


def test_a_hanging_store_makes_readiness_answer_unavailable_within_the_timeout() -> None:
    release = threading.Event()
    calls = []

    def hangs() -> bool:
        calls.append(1)
        return release.wait(30)

    readiness = Readiness({"database": StoreProbe(hangs)}, timeout=0.2)
    started = time.monotonic()
    assert readiness.checks() == {"database": "unavailable"}
    assert readiness.checks() == {"database": "unavailable"}
    assert time.monotonic() - started < 2
    assert len(calls) == 1  # the second probe waited on the hung check, no new thread
    release.set()
    time.sleep(0.05)
    assert readiness.checks() == {"database": "ok"}  # back by itself


def test_a_store_error_in_a_view_is_a_clean_503(settings: Settings, database: Database) -> None:
    app = create_app(settings, database)

    @app.get("/api/v1/test-outage")
    def outage() -> str:
        raise OperationalError("SELECT secret_column", {}, Exception("connection refused"))

    response = app.test_client().get("/api/v1/test-outage")
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["error"] == "service_unavailable"
    assert "secret_column" not in response.text
    assert "connection refused" not in response.text


def test_token_request_with_redis_down_is_a_clean_503(redis_down_app: Flask) -> None:
    response = redis_down_app.test_client().post(
        "/token", data={"grant_type": "client_credentials"}, auth=("someone", "secret")
    )
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["error"] == "service_unavailable"


def test_session_write_with_redis_down_is_a_clean_503(redis_down_app: Flask) -> None:
    client = redis_down_app.test_client()
    response = client.post("/test-sign-in", headers={"Accept": "text/html"})
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert "service_unavailable" in response.text
    assert "Traceback" not in response.text


def test_an_app_built_on_injected_services_uses_them(
    settings: Settings, database: Database
) -> None:
    services = build_services(settings, database)
    down = Readiness({"database": StoreProbe(lambda: False)}, timeout=0.5)
    app = create_app(settings, services=dataclasses.replace(services, readiness=down))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "checks": {"database": "unavailable"}}
