"""Fixtures shared by every suite. Factories live in tests/factories.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from echo_identity import migrations
from echo_identity.config import Settings
from echo_identity.db import Database
from tests.support.databases import fresh_database_url
from tests.support.environment import app_environment, settings_for


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database (SQLite file, or a PostgreSQL schema with ECHO_TEST_DATABASE_URL)."""
    with fresh_database_url(tmp_path) as url:
        yield url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated database."""
    db = Database(database_url)
    migrations.upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def app_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """ECHO_* variables for a development-mode app on the test database."""
    return app_environment(tmp_path / "var", database_url)


@pytest.fixture
def settings(app_env: dict[str, str]) -> Settings:
    return settings_for(app_env)
