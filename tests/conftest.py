"""Fixtures shared by every suite. Factories live in tests/factories.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from echo_identity import migrations
from echo_identity.config import Settings
from echo_identity.db import Database
from tests.support.databases import fresh_database_url
from tests.support.environment import app_environment, settings_for


@pytest.fixture(autouse=True)
def _databases_close_their_connections_with_the_test() -> Iterator[None]:
    """Every :class:`Database` made during a test (by the test, an in-process server or a CLI
    command) has its pool disposed when the test ends. In one process an engine nobody
    disposed is closed by the garbage collector, at a random later moment, and psycopg reports
    each connection it finds open then as a ResourceWarning (an error here). The list holds
    them strongly: a Database the test dropped early (a local variable) would otherwise be
    collected with its pool's open connections before this fixture could dispose it."""
    created: list[Database] = []
    original = Database.__init__

    def tracked(self: Database, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append(self)

    Database.__init__ = tracked  # type: ignore[method-assign]
    try:
        yield
    finally:
        Database.__init__ = original  # type: ignore[method-assign]
        for database in created:
            database.dispose()  # an engine stays usable: its pool reconnects on demand


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
