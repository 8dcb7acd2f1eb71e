"""Readiness reflects the database."""

from __future__ import annotations

from echo_identity.app import create_app
from echo_identity.config import Settings
from echo_identity.db import Database


def test_readyz_is_503_when_the_database_does_not_answer(settings: Settings) -> None:
    unreachable = Database("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=1")
    app = create_app(settings, unreachable)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "error": "database_unavailable"}
    unreachable.dispose()


def test_healthz_does_not_depend_on_the_database(settings: Settings) -> None:
    unreachable = Database("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=1")
    app = create_app(settings, unreachable)
    assert app.test_client().get("/healthz").status_code == 200
    unreachable.dispose()


def test_readyz_is_200_on_a_reachable_database(settings: Settings, database: Database) -> None:
    assert create_app(settings, database).test_client().get("/readyz").status_code == 200
