"""``echo-identity backup``: encrypted backups (create, verify, restore) and the data-key export.

The work is in :mod:`echo_identity.backup`; this module parses options, plugs in Alembic and
every model (``schema``), shows progress and turns each error into one line with its code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import click

from echo_identity.cli.runtime import (
    emit,
    fail,
    json_option,
    services_or_exit,
    settings_or_exit,
)

if TYPE_CHECKING:  # SQLAlchemy and the backup package load when a command runs
    from echo_identity.audit.events import EventType
    from echo_identity.backup.restore import KeySource
    from echo_identity.backup.snapshot import Progress
    from echo_identity.config import Settings
    from echo_identity.crypto.kek import KekProvider
    from echo_identity.db import Database
    from echo_identity.services import Services

_FILE = click.Path(dir_okay=False, path_type=Path)
_keys_from_option = click.option(
    "--keys-from",
    "keys_from",
    metavar="URL",
    help="Database to copy the data keys from (default: ECHO_DATABASE_URL, the live one).",
)
_keys_file_option = click.option(
    "--keys",
    "keys_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A key export (echo-identity backup keys) to take the data keys from instead.",
)


@click.group()
def backup() -> None:
    """Encrypted backups: create, verify and restore them, and export the data keys.

    A backup is a consistent snapshot of every table, compressed and encrypted with
    AES-256-GCM under the backup key (ECHO_BACKUP_KEY or ECHO_BACKUP_KMS_KEY_ID), never the
    vault's KEK. The data keys are not in it: a restore takes them from the live database or
    from a key export, so a user erased since the backup stays erased (docs/backup.md).
    """


@backup.command("create")
@click.option("--out", "out", type=_FILE, required=True, help="The backup file to write.")
@json_option
def create_command(out: Path, as_json: bool) -> None:
    """Write an encrypted backup of the database (online: the service keeps running)."""
    from echo_identity.audit.events import EventType  # imported when the command runs
    from echo_identity.backup.create import create_backup
    from echo_identity.schema import metadata

    settings = settings_or_exit()
    keys = _backup_keys(settings, as_json)
    services = services_or_exit(settings)
    with _progress(as_json) as progress:
        summary = _written(
            out,
            lambda stream: create_backup(services.database, stream, keys, metadata, progress),
            as_json,
        )
    _record(services, EventType.BACKUP_CREATED, summary.key_id, sum(summary.row_counts.values()))
    emit(
        {
            "out": str(out),
            "key_id": summary.key_id,
            "schema_revision": summary.schema_revision,
            "dialect": summary.dialect,
            "tables": summary.row_counts,
            "bytes": summary.size,
        },
        f"backup written to {out}: {sum(summary.row_counts.values())} rows in "
        f"{len(summary.row_counts)} tables, {summary.size} bytes, schema "
        f"{summary.schema_revision}, backup key {summary.key_id}",
        as_json=as_json,
    )


@backup.command("keys")
@click.option("--out", "out", type=_FILE, required=True, help="The key export file to write.")
@json_option
def keys_command(out: Path, as_json: bool) -> None:
    """Export the data keys (still wrapped by the vault's KEK), encrypted with the backup key.

    Needed only to restore after the live database is lost. An export taken before an
    erasure still holds that user's key: take a new one after every erasure and keep only
    the latest (docs/backup.md).
    """
    from echo_identity.audit.events import EventType  # imported when the command runs
    from echo_identity.backup.create import export_data_keys

    settings = settings_or_exit()
    keys = _backup_keys(settings, as_json)
    services = services_or_exit(settings)
    with _progress(as_json) as progress:
        summary = _written(
            out,
            lambda stream: export_data_keys(services.database, stream, keys, progress),
            as_json,
        )
    count = sum(summary.row_counts.values())
    _record(services, EventType.BACKUP_KEYS_EXPORTED, summary.key_id, count)
    emit(
        {"out": str(out), "key_id": summary.key_id, "data_keys": count, "bytes": summary.size},
        f"{count} data keys exported to {out}; keep only the latest export",
        as_json=as_json,
    )


def _record(services: Services, event_type: EventType, key_id: str, rows: int) -> None:
    """Put the copy in the trail: who may hold the data is security evidence (the file's
    name stays out: it may say more than it should)."""
    from echo_identity.audit.events import Severity

    services.audit.write(
        event_type,
        actor="cli",
        severity=Severity.WARNING,
        details={"backup_key_id": key_id, "rows": rows},
    )


@backup.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_keys_from_option
@_keys_file_option
@json_option
def verify_command(
    file: Path, keys_from: str | None, keys_file: Path | None, as_json: bool
) -> None:
    """Check a backup: decrypt every chunk, restore it into a scratch database, verify its
    audit trail and decrypt one vault secret per data key. Exits 1 naming the first failure.
    """
    from echo_identity.backup.errors import BackupError
    from echo_identity.backup.verify import verify_backup
    from echo_identity.keys.kek_providers import keyring_factory
    from echo_identity.schema import ENCRYPTED_COLUMNS, metadata

    settings = settings_or_exit()
    keys = _backup_keys(settings, as_json)
    source = _key_source(settings, keys, keys_from, keys_file, as_json)
    try:
        with _progress(as_json) as progress:
            report = verify_backup(
                file,
                keys,
                metadata,
                _Alembic(),
                source,
                ENCRYPTED_COLUMNS,
                keyring_factory(settings),
                progress,
            )
    except BackupError as exc:
        _backup_failure(exc, as_json)
    checks = [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in report.checks]
    payload = {
        "passed": report.passed,
        "key_id": report.key_id,
        "schema_revision": report.schema_revision,
        "dialect": report.dialect,
        "created_at": report.created_at,
        "tables": report.row_counts,
        "checks": checks,
    }
    failure = report.first_failure()
    if as_json:
        error = {} if failure is None else {"error": "backup_verification_failed"}
        emit({**payload, **error}, "", as_json=True)
    else:
        _print_report(report.checks, file, report.created_at, report.schema_revision)
    if failure is not None:
        click.echo(f"error: backup_verification_failed: {failure.name}: {failure.detail}", err=True)
        raise SystemExit(1)


@backup.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--database-url", "database_url", required=True, help="The new, empty database to restore into."
)
@_keys_from_option
@_keys_file_option
@json_option
def restore_command(
    file: Path, database_url: str, keys_from: str | None, keys_file: Path | None, as_json: bool
) -> None:
    """Restore a backup into a new, empty database, then upgrade its schema to the newest.

    The data keys come from the live database (ECHO_DATABASE_URL), --keys-from or --keys;
    the vault's KEK that wraps them must be configured where the restored database is used.
    """
    from echo_identity.backup.errors import BackupError
    from echo_identity.backup.restore import restore_backup
    from echo_identity.db import Database
    from echo_identity.schema import metadata

    settings = settings_or_exit()
    keys = _backup_keys(settings, as_json)
    source = _key_source(settings, keys, keys_from, keys_file, as_json)
    target = Database(database_url)
    try:
        with _progress(as_json) as progress:
            summary = restore_backup(file, target, keys, metadata, _Alembic(), source, progress)
    except BackupError as exc:
        _backup_failure(exc, as_json)
    finally:
        target.dispose()
    rows = sum(summary.row_counts.values())
    emit(
        {
            "restored": True,
            "schema_revision": summary.schema_revision,
            "tables": summary.row_counts,
            "data_keys": summary.data_keys,
        },
        f"restored {rows} rows in {len(summary.row_counts)} tables and {summary.data_keys} data "
        f"keys (backup schema {summary.schema_revision}, now upgraded to the newest)",
        as_json=as_json,
    )


class _Alembic:
    """The schema migrations, for :mod:`echo_identity.backup.restore`."""

    def knows(self, revision: str) -> bool:
        from alembic.script import ScriptDirectory

        from echo_identity.migrations import SCRIPT_LOCATION

        try:
            found = ScriptDirectory(SCRIPT_LOCATION).get_revision(revision)
        except Exception:  # alembic's lookup errors have no common public base
            return False
        return found is not None and found.revision == revision  # an id, not "head"

    def upgrade(self, database: Database, revision: str) -> None:
        from echo_identity import migrations

        migrations.upgrade(database, revision)


def _backup_keys(settings: Settings, as_json: bool) -> KekProvider:
    from echo_identity.backup.backup_keys import backup_key_provider
    from echo_identity.backup.errors import BackupError
    from echo_identity.config import ConfigError

    try:
        return backup_key_provider(settings)
    except BackupError as exc:
        _backup_failure(exc, as_json)
    except ConfigError as exc:
        fail(str(exc), as_json=as_json, code="config_error")


def _key_source(
    settings: Settings,
    keys: KekProvider,
    keys_from: str | None,
    keys_file: Path | None,
    as_json: bool,
) -> KeySource:
    from echo_identity.backup.restore import data_keys_from_database, data_keys_from_export
    from echo_identity.db import Database

    if keys_from is not None and keys_file is not None:
        fail("give either --keys-from or --keys, not both", as_json=as_json, code="usage")
    if keys_file is not None:
        return data_keys_from_export(keys_file, keys)
    source = Database(keys_from or settings.database_url)
    context = click.get_current_context(silent=True)
    if context is not None:
        context.call_on_close(source.dispose)
    return data_keys_from_database(source)


def _written(out: Path, write: Callable[[BinaryIO], Any], as_json: bool) -> Any:
    """What ``write`` returns after writing ``out`` (mode 0600) through a temporary file in
    the same directory, renamed into place only when complete; an existing file is refused."""
    from echo_identity.backup.errors import BackupError

    if out.exists():
        fail(f"{out} already exists; choose a new file name", as_json=as_json, code="file_exists")
    partial = out.with_name(out.name + ".partial")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}", as_json=as_json, code="file_not_writable")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            result = write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        partial.replace(out)
    except BackupError as exc:
        partial.unlink(missing_ok=True)
        _backup_failure(exc, as_json)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        if getattr(exc, "code", None) == "kms_wrap_failed":
            fail(str(exc), as_json=as_json, code="kms_wrap_failed")
        if isinstance(exc, OSError):
            fail(f"cannot write {out}: {exc.strerror}", as_json=as_json, code="file_not_writable")
        raise
    return result


def _backup_failure(exc: Any, as_json: bool) -> NoReturn:
    fail(f"{exc.code}: {exc.description}", as_json=as_json, code=exc.code)


@contextmanager
def _progress(as_json: bool) -> Iterator[Progress]:
    """A progress callback drawing one rich bar per stage on stderr (none with --json or
    when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        disable=as_json or not console.is_terminal,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _print_report(checks: list[Any], file: Path, created_at: str, revision: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"backup {file.name}: created {created_at}, schema {revision}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for check in checks:
        table.add_row(check.name, "ok" if check.passed else "FAILED", check.detail)
    Console(soft_wrap=True).print(table)
