"""``echo-identity vault``: online rotation of the token vault's encryption keys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from echo_identity.cli.runtime import emit, fail, json_option, services_or_exit, settings_or_exit

if TYPE_CHECKING:  # keys.rotation loads SQLAlchemy: imported when a command runs
    from sqlalchemy.orm import Session

    from echo_identity.keys.rotation import DekRotation
    from echo_identity.services import Services

# keys.rotation.DEFAULT_BATCH_SIZE, repeated so that --help does not import SQLAlchemy;
# tests/unit/test_cli.py fails when they drift apart.
DEFAULT_BATCH_SIZE = 1000


@click.group()
def vault() -> None:
    """Token vault encryption keys: re-wrap data keys under a new KEK, or rotate the data keys.

    Both commands run online: the service keeps serving tokens while they work.
    """


@vault.command("rotate-kek")
@json_option
def rotate_kek_command(as_json: bool) -> None:
    """Re-wrap every data key (DEK) under the first key in ECHO_VAULT_KEK.

    Use it to retire a key-encryption key (KEK): on a schedule, or when the old KEK may have
    leaked. Stored tokens are not touched, so it takes seconds. The order matters:

    \b
      1. put the new KEK first in ECHO_VAULT_KEK and keep the old one after it
         (ECHO_VAULT_KEK=<new>,<old>), then restart the service;
      2. run: echo-identity vault rotate-kek
      3. remove the old KEK from ECHO_VAULT_KEK and restart again.

    Removing the old KEK before step 2 makes every data key it wraps unreadable, and with
    them the tokens. If the old KEK leaked together with a database backup, also run
    rotate-deks after step 2: the backup's data keys are still the ones in use.

    Safe to run again after a failure: it re-wraps only the data keys still under an old KEK.
    """
    from echo_identity.audit.events import EventType  # imported when the command runs
    from echo_identity.crypto.aead import DecryptionError
    from echo_identity.crypto.kek import UnknownKekError
    from echo_identity.keys.rotation import rotate_kek

    services = services_or_exit(settings_or_exit())
    with _session(services) as session:
        try:
            rewrapped = rotate_kek(session, services.keyrings(session))
        except UnknownKekError as exc:
            fail(
                f"a data key is wrapped by KEK {exc.kek_id}, which ECHO_VAULT_KEK no longer "
                "holds; add it back after the new KEK and run rotate-kek again",
                as_json=as_json,
                code=exc.code,
            )
        except DecryptionError as exc:
            fail(
                f"a stored data key failed authentication ({exc}); restore the data_keys "
                "table from a backup, then run rotate-kek again",
                as_json=as_json,
                code=exc.code,
            )
        details = {"key": "vault_kek", "rewrapped": rewrapped}
        services.audit.record(session, EventType.KEY_ROTATED, actor="cli", details=details)
        session.commit()
    emit(
        {"rewrapped": rewrapped},
        f"re-wrapped {rewrapped} data keys under the first KEK in ECHO_VAULT_KEK; "
        "older KEKs can now be removed from it",
        as_json=as_json,
    )


@vault.command("rotate-deks")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Rows re-encrypted per transaction.",
)
@json_option
def rotate_deks_command(batch_size: int, as_json: bool) -> None:
    """Re-encrypt every stored secret under new data keys (DEKs), then delete the old DEKs.

    Use it when a data key may have leaked, for example with a database backup and the KEK
    of its time, or on a schedule. Every user (and the system) gets a new DEK. Tokens,
    provider client secrets and signing keys are re-encrypted in batches, one short
    transaction each, while the service keeps running. A token refreshed meanwhile keeps
    the value the refresh wrote. Once nothing uses an old DEK it is deleted, so a backup
    of it opens nothing stored now.

    If the run is interrupted, run the command again: it resumes where it stopped. The new
    DEKs are wrapped under the first KEK in ECHO_VAULT_KEK; to retire a KEK as well, run
    rotate-kek first (see its --help).
    """
    from rich.console import Console  # imported when the command runs
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )
    from sqlalchemy.exc import OperationalError

    from echo_identity.audit.events import EventType
    from echo_identity.keys.rotation import rotate_deks
    from echo_identity.schema import ENCRYPTED_COLUMNS

    services = services_or_exit(settings_or_exit())
    with _session(services) as session:
        keyring = services.keyrings(session)
        console = Console(stderr=True)
        with Progress(
            TextColumn("re-encrypting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=as_json or not console.is_terminal,
        ) as bar:
            task = bar.add_task("re-encrypting", total=None)
            try:
                report = rotate_deks(
                    session,
                    keyring,
                    ENCRYPTED_COLUMNS,
                    batch_size=batch_size,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
            except OperationalError as exc:
                fail(
                    f"the database failed during the rotation ({exc.orig}); every committed "
                    "batch is kept: run rotate-deks again to resume",
                    as_json=as_json,
                    code="database_error",
                )
        details = {"key": "vault_dek", **_details(report)}
        services.audit.record(session, EventType.KEY_ROTATED, actor="cli", details=details)
        session.commit()
    if report.failures:
        first = report.failures[0]
        fail(
            f"{len(report.failures)} of the stored secrets could not be re-encrypted (first: "
            f"{first.field} row {first.row}: {first.message}); their old data keys were kept; "
            "fix the cause and run rotate-deks again to finish",
            as_json=as_json,
            code="reencryption_failed",
        )
    if report.deletion_deferred:
        fail(
            "every secret was re-encrypted, but the old data keys were kept: a database "
            "transaction older than the rotation stayed open for over a minute; end it and run "
            "rotate-deks again (it starts a new rotation, then deletes the old keys)",
            as_json=as_json,
            code="deletion_deferred",
        )
    emit(_details(report), _summary(report), as_json=as_json)


@contextmanager
def _session(services: Services) -> Iterator[Session]:
    """A session on the configured database; the engine's connections are closed afterwards."""
    try:
        with services.database.session() as session:
            yield session
    finally:
        services.database.dispose()


def _details(report: DekRotation) -> dict[str, int | bool]:
    return {
        "resumed": report.resumed,
        "retired_data_keys": report.retired_data_keys,
        "new_data_keys": report.new_data_keys,
        "ciphertexts": report.ciphertexts,
        "reencrypted": report.reencrypted,
        "changed_concurrently": report.changed_concurrently,
        "deleted_data_keys": report.deleted_data_keys,
        "deletion_deferred": report.deletion_deferred,
        "failed": len(report.failures),
    }


def _summary(report: DekRotation) -> str:
    lines = [
        f"re-encrypted {report.reencrypted} of {report.ciphertexts} secrets under "
        f"{report.new_data_keys} new data keys; deleted {report.deleted_data_keys} old data keys"
    ]
    if report.resumed:
        lines.append("finished an interrupted rotation; run again to start a new one")
    if report.changed_concurrently:
        lines.append(
            f"{report.changed_concurrently} rows changed during the run and kept their new "
            "value; run again to move any of them still under an old data key"
        )
    return "\n".join(lines)
