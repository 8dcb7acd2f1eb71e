"""``echo-identity vault``: KEK and DEK rotation on a real, migrated database.

Most tests drive the ``vault`` group in process through click's CliRunner (fast, and the
progress callback runs in the test's process); one runs the installed ``echo-identity`` entry
point.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from echo_identity.audit.models import AuditEvent
from echo_identity.cli.vault import vault
from echo_identity.crypto import aead
from echo_identity.db import Database
from echo_identity.keys.kek_providers import keyring_factory
from echo_identity.keys.models import DataKey
from echo_identity.vault.models import Connection
from tests.factories import create_user, store_vault_token
from tests.support.environment import app_environment, new_kek, settings_for
from tests.support.server import run_cli

TOKEN = b"gho_the-users-refresh-token"


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """A migrated database and the ECHO_* variables of an app using it."""
    environment = app_environment(tmp_path / "var", database_url)
    migrated = run_cli(environment, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    return environment


def store_token(env: dict[str, str]) -> int:
    """A user's connection holding TOKEN, encrypted as the vault stores it; returns its id."""
    settings = settings_for(env)
    return store_vault_token(settings, create_user(settings.database_url).id, TOKEN)


def stored_token(env: dict[str, str], connection_id: int) -> tuple[str, bytes]:
    """The DEK id the stored token names, and the token decrypted with ``env``'s KEKs."""
    settings = settings_for(env)
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            ciphertext = session.scalars(
                select(Connection.refresh_token_ciphertext).where(Connection.id == connection_id)
            ).one()
            assert ciphertext is not None
            plaintext = keyring_factory(settings)(session).decrypt(
                ciphertext, f"connection:{connection_id}:refresh_token"
            )
            return aead.key_id_of(ciphertext), plaintext
    finally:
        database.dispose()


def data_key_ids(env: dict[str, str]) -> set[str]:
    database = Database(settings_for(env).database_url)
    try:
        with database.session() as session:
            return set(session.scalars(select(DataKey.id)))
    finally:
        database.dispose()


def vault_cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(vault, list(args), env=env)


def test_rotate_deks_json_moves_every_secret_to_new_data_keys(env: dict[str, str]) -> None:
    connection_id = store_token(env)
    old_deks = data_key_ids(env)

    result = vault_cli(env, "rotate-deks", "--batch-size", "1", "--json")

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == {
        "resumed": False,
        "retired_data_keys": 2,
        "new_data_keys": 2,
        "ciphertexts": 2,
        "reencrypted": 2,
        "changed_concurrently": 0,
        "deleted_data_keys": 2,
        "deletion_deferred": False,
        "failed": 0,
    }
    key_id, token = stored_token(env, connection_id)
    assert token == TOKEN
    assert key_id not in old_deks
    assert data_key_ids(env).isdisjoint(old_deks)
    database = Database(settings_for(env).database_url)
    with database.session() as session:
        [event] = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "key.rotated")
        ).all()
    database.dispose()
    assert event.details["key"] == "vault_dek"
    assert event.details["reencrypted"] == 2


def test_echo_identity_vault_rotate_deks_runs_from_the_entry_point(env: dict[str, str]) -> None:
    connection_id = store_token(env)
    old_deks = data_key_ids(env)

    result = run_cli(env, "vault", "rotate-deks", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["reencrypted"] == 2
    key_id, token = stored_token(env, connection_id)
    assert token == TOKEN
    assert key_id not in old_deks


def test_rotate_deks_without_json_prints_a_summary(env: dict[str, str]) -> None:
    store_token(env)

    result = vault_cli(env, "rotate-deks")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("re-encrypted 2 of 2 secrets under 2 new data keys")


def test_rotate_deks_names_an_unreadable_secret_and_exits_1(env: dict[str, str]) -> None:
    connection_id = store_token(env)
    database = Database(settings_for(env).database_url)
    with database.transaction() as session:
        connection = session.get_one(Connection, connection_id)
        ciphertext = connection.refresh_token_ciphertext
        assert ciphertext is not None
        connection.refresh_token_ciphertext = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    database.dispose()

    result = vault_cli(env, "rotate-deks", "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == "reencryption_failed"
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: 1 of the stored secrets could not be re-encrypted")
    assert f"vault_connections.refresh_token_ciphertext row {connection_id}" in line


def test_rotate_kek_then_dropping_the_old_kek_keeps_every_token_readable(
    env: dict[str, str],
) -> None:
    connection_id = store_token(env)
    old, new = env["ECHO_VAULT_KEK"], new_kek()

    result = vault_cli({**env, "ECHO_VAULT_KEK": f"{new},{old}"}, "rotate-kek", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"rewrapped": 2}
    _, token = stored_token({**env, "ECHO_VAULT_KEK": new}, connection_id)
    assert token == TOKEN


def test_rotate_kek_without_the_old_kek_fails_with_one_actionable_line(
    env: dict[str, str],
) -> None:
    connection_id = store_token(env)

    result = vault_cli({**env, "ECHO_VAULT_KEK": new_kek()}, "rotate-kek", "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == "unknown_kek"
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert "add it back" in line
    _, token = stored_token(env, connection_id)  # nothing changed under the old KEK
    assert token == TOKEN


def test_rotate_kek_help_gives_the_order_for_retiring_a_kek() -> None:
    result = CliRunner().invoke(vault, ["rotate-kek", "--help"])

    assert result.exit_code == 0
    steps = [
        result.output.index("1. put the new KEK first in ECHO_VAULT_KEK"),
        result.output.index("2. run: echo-identity vault rotate-kek"),
        result.output.index("3. remove the old KEK from ECHO_VAULT_KEK"),
    ]
    assert steps == sorted(steps)
