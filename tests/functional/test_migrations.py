"""The same Alembic migrations build the models' schema on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from echo_identity import migrations
from echo_identity.db import Database
from echo_identity.schema import metadata


def test_migrated_schema_matches_the_models(database: Database) -> None:
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []
    assert migrations.is_up_to_date(database)


def test_migrations_downgrade_to_empty_and_upgrade_again(database: Database) -> None:
    migrations.upgrade(database)  # idempotent at head
    command.downgrade(migrations.alembic_config(database), "base")
    assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
    migrations.upgrade(database)
    assert {"users", "browser_sessions", "oauth_clients"} <= set(
        inspect(database.engine).get_table_names()
    )


def test_sqlite_runs_in_wal_mode_with_foreign_keys(database: Database) -> None:
    if database.dialect != "sqlite":
        assert database.dialect == "postgresql"
        return
    with database.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
