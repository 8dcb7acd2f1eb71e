"""What every command needs: validated settings, logging, a migrated database, output.

Settings (pydantic), the database (SQLAlchemy) and logging (structlog) are imported by the
functions that build them, so a command module can import this one at its top and its
``--help`` still starts none of them (tests/unit/test_cli.py checks every group).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from echo_identity.config import Settings
    from echo_identity.db import Database
    from echo_identity.errors import EchoError
    from echo_identity.services import Services


def fail(message: str, *, as_json: bool = False, code: str = "error") -> NoReturn:
    """Print one actionable error line (or a JSON error object) and exit with status 1."""
    if as_json:
        click.echo(json.dumps({"error": code, "message": message}))
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def settings_or_exit() -> Settings:
    """Validated settings with logging configured; exits with one line naming the variable."""
    from echo_identity.config import ConfigError, load_settings  # imported when a command runs
    from echo_identity.logs import configure_logging, get_logger

    try:
        settings, generated = load_settings()
    except ConfigError as exc:
        fail(str(exc), code="config_error")
    configure_logging(settings.log_level, settings.effective_log_format)
    if generated:
        get_logger("echo_identity.config").warning(
            "development_secrets_in_use",
            variables=[secret.variable for secret in generated],
            directory=str(settings.var_dir),
            hint="generated once for this machine; set them explicitly outside development",
        )
    return settings


def database_or_exit(settings: Settings, *, require_migrated: bool = True) -> Database:
    """The configured database; exits with a hint when it is unreachable or not migrated."""
    from echo_identity.db import Database  # imported when a command runs
    from echo_identity.migrations import is_up_to_date  # Alembic: only for commands that need it

    database = Database(settings.database_url)
    context = click.get_current_context(silent=True)
    if context is not None:  # the pool's connections close with the command, however it ends
        context.call_on_close(database.dispose)
    if not database.ping():
        fail("cannot reach the database named by ECHO_DATABASE_URL; is it running?")
    if require_migrated and not is_up_to_date(database):
        fail("the database schema is not up to date; run: echo-identity db upgrade")
    return database


def services_or_exit(settings: Settings) -> Services:
    """Every collaborator, built by the wiring point on the checked, migrated database."""
    from echo_identity.services import build_services  # imported when a command runs

    return build_services(settings, database_or_exit(settings))


def echo_error(exc: EchoError, *, as_json: bool) -> NoReturn:
    fail(exc.description, as_json=as_json, code=exc.code)


def emit(payload: dict[str, Any], human: str, *, as_json: bool) -> None:
    click.echo(json.dumps(payload) if as_json else human)


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
