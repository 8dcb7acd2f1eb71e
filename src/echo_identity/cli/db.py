"""``echo-identity db``: schema migrations."""

from __future__ import annotations

import click

from echo_identity.cli.runtime import database_or_exit, emit, json_option, settings_or_exit


@click.group()
def db() -> None:
    """Database schema management."""


@db.command()
@json_option
def upgrade(as_json: bool) -> None:
    """Apply every pending migration (safe to run repeatedly)."""
    from echo_identity import migrations  # Alembic and every model: only when it runs

    database = database_or_exit(settings_or_exit(), require_migrated=False)
    before = migrations.current_revision(database)
    migrations.upgrade(database)
    after = migrations.current_revision(database)
    emit(
        {"from": before, "to": after},
        f"database at revision {after}" + ("" if before != after else " (already current)"),
        as_json=as_json,
    )


@db.command()
@json_option
def current(as_json: bool) -> None:
    """Show the applied and the newest migration."""
    from echo_identity import migrations

    database = database_or_exit(settings_or_exit(), require_migrated=False)
    applied, head = migrations.current_revision(database), migrations.head_revision(database)
    emit({"current": applied, "head": head}, f"current {applied}, newest {head}", as_json=as_json)
