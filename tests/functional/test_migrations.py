"""The same Alembic migrations build the models' schema on SQLite and PostgreSQL."""

from __future__ import annotations

import json

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


def test_0008_names_todays_registered_services_in_earlier_vault_consents(
    database_url: str,
) -> None:
    """Consents given before services were named cover exactly the clients that could fetch the
    token until then: nobody loses a working integration and no service gains one."""
    database = Database(database_url)
    try:
        migrations.upgrade(database, "0007")
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (sub, username, email, password_hash, disabled, is_admin,"
                    " created_at, updated_at) VALUES ('s-1', 'ann', 'ann@example.org', 'x',"
                    " false, false, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
            for client_id, providers in (
                ("billing", '["github"]'),
                ("reports", '["github", "slack"]'),
                ("other", "[]"),
            ):
                connection.execute(
                    text(
                        "INSERT INTO oauth_clients (client_id, name, redirect_uris,"
                        " post_logout_redirect_uris, grant_types, scope, audiences,"
                        " token_endpoint_auth_method, id_token_alg, vault_providers, disabled,"
                        " created_at) VALUES (:id, :id, '[]', '[]', '[]', '', '[]', 'none',"
                        " 'RS256', :providers, false, '2026-01-01 00:00:00')"
                    ),
                    {"id": client_id, "providers": providers},
                )
            user_id = connection.execute(text("SELECT id FROM users")).scalar_one()
            for provider in ("github", "slack", "gitlab"):
                connection.execute(
                    text(
                        "INSERT INTO vault_consents (user_id, provider_name, scope,"
                        " consent_text_version, granted_at) VALUES (:user, :provider, '', '1',"
                        " '2026-01-01 00:00:00')"
                    ),
                    {"user": user_id, "provider": provider},
                )
        migrations.upgrade(database)
        with database.engine.connect() as connection:
            rows = connection.execute(
                text("SELECT provider_name, client_ids FROM vault_consents")
            ).all()
        covered = {
            name: sorted(json.loads(ids) if isinstance(ids, str) else ids) for name, ids in rows
        }
        assert covered == {"github": ["billing", "reports"], "slack": ["reports"], "gitlab": []}
    finally:
        database.dispose()
