"""``echo-identity backup``: create, verify, restore and the key export, on a real database
(SQLite, or PostgreSQL under ECHO_TEST_DATABASE_URL), with a live server as the source and
another one serving the restored copy.

The source is built once per module: a user who signs in, a vault connection to a second Echo
Identity (the upstream provider), a service client that reads the user's token, audit events
sealed into the chain; then one backup of it. Tests that change a database use their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, table, update

from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent
from echo_identity.crypto.aead import DecryptionError
from echo_identity.db import Database
from echo_identity.keys.kek_providers import keyring_factory
from echo_identity.keys.keyring import UnknownDataKeyError
from echo_identity.vault.models import REFRESH_TOKEN, Connection
from tests.factories import TestUser, create_user, record_event, store_vault_token
from tests.support.browser import Browser
from tests.support.databases import fresh_database_url
from tests.support.environment import app_environment, new_kek, settings_for
from tests.support.oidc import RegisteredClient, client_credentials_token
from tests.support.secret_scan import echo_shaped
from tests.support.server import CliResult, LiveServer, run_cli, running_server, start_server
from tests.support.vault import (
    connect_upstream,
    fetch_vault_token,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)


@dataclass(frozen=True)
class Source:
    server: LiveServer
    user: TestUser
    service: RegisteredClient
    provider: str
    vault_token: str  # the access token the vault handed out before the backup
    backup: Path


@pytest.fixture(scope="module")
def source(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: LiveServer
) -> Iterator[Source]:
    directory = tmp_path_factory.mktemp("backup-source")
    with running_server(directory, ECHO_BACKUP_KEY=new_kek(), ECHO_AUDIT_SEAL_GRACE="0") as server:
        upstream = connect_upstream(server, upstream_server, "github")
        user = create_user(server.env["ECHO_DATABASE_URL"])
        service = vault_service_client(server, upstream.name)
        run_connect_flow(server, upstream, user)
        bearer = vault_api_token(server, service)
        answer = fetch_vault_token(server, bearer, user.sub, upstream.name)
        assert answer.status_code == 200, answer.text
        sealed = run_cli(server.env, "worker", "--once")
        assert sealed.returncode == 0, sealed.stderr
        backup = directory / "echo.backup"
        created = run_cli(server.env, "backup", "create", "--out", str(backup), "--json")
        assert created.returncode == 0, created.stderr
        yield Source(server, user, service, upstream.name, answer.json()["access_token"], backup)


@contextmanager
def empty_database(directory: Path) -> Iterator[str]:
    """A URL naming a new, empty database (its own SQLite file in ``directory``)."""
    directory.mkdir(parents=True, exist_ok=True)
    with fresh_database_url(directory) as url:
        yield url


def flipped(source: Path, target: Path, position: int) -> Path:
    data = bytearray(source.read_bytes())
    data[position] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def error_of(result: CliResult) -> dict[str, str]:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    error: dict[str, str] = json.loads(result.stdout.splitlines()[-1])
    return error


def row_counts(url: str) -> dict[str, int]:
    database = Database(url)
    try:
        names = inspect(database.engine).get_table_names()
        with database.engine.connect() as connection:
            return {
                name: int(connection.scalar(select(func.count()).select_from(table(name))) or 0)
                for name in names
            }
    finally:
        database.dispose()


def test_create_writes_a_header_naming_key_revision_and_row_counts(source: Source) -> None:
    created = json.loads(
        run_cli(
            source.server.env,
            "backup",
            "create",
            "--out",
            str(source.backup.with_name("second.backup")),
            "--json",
        ).stdout
    )
    assert created["key_id"].startswith("local:")
    assert created["schema_revision"]
    assert created["tables"]["users"] >= 1
    assert created["tables"]["vault_connections"] == 1
    assert "data_keys" not in created["tables"]  # the data keys never go into a data backup
    database = Database(source.server.env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            recorded = session.scalars(
                select(AuditEvent).where(AuditEvent.event_type == str(EventType.BACKUP_CREATED))
            ).all()
    finally:
        database.dispose()
    # every copy taken is in the trail (the source fixture's and this one), without the path
    assert len(recorded) >= 2
    assert recorded[-1].details == {
        "backup_key_id": created["key_id"],
        "rows": sum(created["tables"].values()),
    }


def test_create_then_verify_passes_with_the_audit_chain_and_a_vault_probe(source: Source) -> None:
    verified = run_cli(source.server.env, "backup", "verify", str(source.backup), "--json")

    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["passed"] is True
    checks = {check["name"]: check for check in report["checks"]}
    assert set(checks) == {"integrity", "schema", "audit_chain", "vault_probe"}
    assert all(check["passed"] for check in checks.values())
    assert " 0 sealed events" not in checks["audit_chain"]["detail"]
    # the system's data key (signing keys, provider secret) and the user's each decrypted one
    assert checks["vault_probe"]["detail"].startswith("2 data keys each decrypted")


def test_verify_prints_a_table_of_the_checks(source: Source) -> None:
    verified = run_cli(source.server.env, "backup", "verify", str(source.backup))

    assert verified.returncode == 0, verified.stderr
    for name in ("integrity", "schema", "audit_chain", "vault_probe"):
        assert name in verified.stdout


def test_the_backup_file_holds_no_plaintext_name_email_or_secret(source: Source) -> None:
    data = source.backup.read_bytes()
    for clear in (
        source.user.username,
        f"{source.user.username}@example.org",
        source.user.password,
        source.user.sub,
        source.service.client_secret or "",
        source.vault_token,
        source.server.env["ECHO_BACKUP_KEY"],
        source.server.env["ECHO_VAULT_KEK"],
    ):
        assert clear
        assert clear.encode() not in data
    assert echo_shaped(data.decode("latin-1")) == []


@pytest.mark.parametrize("where", ["magic", "header", "first chunk", "middle", "last byte"])
def test_one_flipped_byte_makes_verify_fail_naming_the_problem(
    source: Source, tmp_path: Path, where: str
) -> None:
    size = source.backup.stat().st_size
    header_end = 12 + int.from_bytes(source.backup.read_bytes()[8:12], "big")
    position = {
        "magic": 3,
        "header": 40,
        "first chunk": header_end + 20,
        "middle": (header_end + size) // 2,
        "last byte": size - 1,
    }[where]
    damaged = flipped(source.backup, tmp_path / "damaged.backup", position)

    result = run_cli(source.server.env, "backup", "verify", str(damaged), "--json")

    error = error_of(result)
    assert error["error"] in {"not_a_backup", "backup_corrupt"}
    if where in {"first chunk", "middle", "last byte"}:
        assert error["error"] == "backup_corrupt"
        assert "chunk" in error["message"]
        assert "failed authentication" in error["message"]
    assert f"error: {error['error']}: " in result.stderr


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.05])
def test_a_truncated_backup_fails_verify(source: Source, tmp_path: Path, keep: float) -> None:
    data = source.backup.read_bytes()
    cut = tmp_path / "cut.backup"
    cut.write_bytes(data[: int(len(data) * keep)])

    error = error_of(run_cli(source.server.env, "backup", "verify", str(cut), "--json"))

    assert error["error"] == "backup_truncated"


def test_restore_into_an_empty_database_serves_the_same_clients_users_and_vault_tokens(
    source: Source, tmp_path: Path
) -> None:
    with fresh_database_url(tmp_path) as url:
        restored = run_cli(
            source.server.env,
            "backup",
            "restore",
            str(source.backup),
            "--database-url",
            url,
            "--json",
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr
        summary = json.loads(restored.stdout)
        assert summary["restored"] is True
        assert summary["data_keys"] >= 2

        env = {**source.server.env, "ECHO_DATABASE_URL": url}
        env.pop("ECHO_ISSUER")  # the copy serves on its own port
        copy = start_server(env, tmp_path / "restored.log")
        try:
            # a client authenticates with its old secret
            assert client_credentials_token(copy, source.service)["access_token"]
            # a user signs in with the old password
            signed_in = Browser(copy).login(source.user.username, source.user.password)
            assert signed_in.status_code == 302, signed_in.text
            assert signed_in.headers["location"] == "/account"
            # the vault hands out the same third-party token
            bearer = vault_api_token(copy, source.service)
            answer = fetch_vault_token(copy, bearer, source.user.sub, source.provider)
            assert answer.status_code == 200, answer.text
            assert answer.json()["access_token"] == source.vault_token
            # new rows get new ids: the sequences were moved past the restored ones
            other = create_user(url)
            assert other.id > source.user.id
        finally:
            copy.stop()


def test_restore_into_a_non_empty_database_is_refused_and_writes_nothing(
    source: Source, tmp_path: Path
) -> None:
    with fresh_database_url(tmp_path) as url:
        env = {**source.server.env, "ECHO_DATABASE_URL": url}
        assert run_cli(env, "db", "upgrade").returncode == 0
        create_user(url)
        before = row_counts(url)

        result = run_cli(
            source.server.env,
            "backup",
            "restore",
            str(source.backup),
            "--database-url",
            url,
            "--json",
        )

        assert error_of(result)["error"] == "restore_target_not_empty"
        assert row_counts(url) == before


def test_restore_of_a_damaged_backup_writes_nothing(source: Source, tmp_path: Path) -> None:
    damaged = flipped(source.backup, tmp_path / "damaged.backup", source.backup.stat().st_size - 1)
    with fresh_database_url(tmp_path) as url:
        result = run_cli(
            source.server.env, "backup", "restore", str(damaged), "--database-url", url, "--json"
        )

        assert error_of(result)["error"] == "backup_corrupt"
        assert row_counts(url) == {}


# --- crypto-shredding survives backups -------------------------------------------------------


TOKEN_A = b"gho_token-of-the-user-who-is-erased"
TOKEN_B = b"gho_token-of-the-user-who-stays"


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    environment = app_environment(tmp_path / "var", database_url, ECHO_BACKUP_KEY=new_kek())
    migrated = run_cli(environment, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    return environment


def store_token(env: dict[str, str], user: TestUser, token: bytes) -> int:
    """A connection of ``user`` holding ``token``, encrypted as the vault stores it."""
    return store_vault_token(settings_for(env), user.id, token)


def read_token(env: dict[str, str], url: str, connection_id: int) -> bytes:
    """The token of connection ``connection_id`` in database ``url``, decrypted with ``env``'s
    KEK, as the vault would."""
    database = Database(url)
    try:
        with database.session() as session:
            ciphertext = session.scalars(
                select(Connection.refresh_token_ciphertext).where(Connection.id == connection_id)
            ).one()
            assert ciphertext is not None
            keyring = keyring_factory(settings_for(env))(session)
            return keyring.decrypt(ciphertext, REFRESH_TOKEN.context_for(connection_id))
    finally:
        database.dispose()


def destroy_data_key(env: dict[str, str], user: TestUser) -> None:
    settings = settings_for(env)
    database = Database(settings.database_url)
    try:
        with database.transaction() as session:
            assert keyring_factory(settings)(session).destroy(f"user:{user.id}") == 1
    finally:
        database.dispose()


def test_a_backup_taken_before_an_erasure_no_longer_yields_that_users_tokens(
    env: dict[str, str], tmp_path: Path
) -> None:
    url = env["ECHO_DATABASE_URL"]
    erased, kept = create_user(url), create_user(url)
    erased_connection = store_token(env, erased, TOKEN_A)
    kept_connection = store_token(env, kept, TOKEN_B)
    backup = tmp_path / "before-erasure.backup"
    assert run_cli(env, "backup", "create", "--out", str(backup)).returncode == 0

    # the real erasure: its crypto-shredding step destroys the user's data key
    erasure = run_cli(env, "users", "delete", erased.sub, "--yes", "--json")
    assert erasure.returncode == 0, erasure.stdout + erasure.stderr

    verified = run_cli(env, "backup", "verify", str(backup), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    probe = {c["name"]: c for c in json.loads(verified.stdout)["checks"]}["vault_probe"]
    assert "1 data keys absent" in probe["detail"]
    with empty_database(tmp_path / "restored") as target:
        restored = run_cli(env, "backup", "restore", str(backup), "--database-url", target)
        assert restored.returncode == 0, restored.stderr

        with pytest.raises(UnknownDataKeyError):
            read_token(env, target, erased_connection)
        assert read_token(env, target, kept_connection) == TOKEN_B


def test_a_key_export_restores_after_total_loss_and_one_taken_after_erasure_shreds(
    env: dict[str, str], tmp_path: Path
) -> None:
    url = env["ECHO_DATABASE_URL"]
    erased, kept = create_user(url), create_user(url)
    erased_connection = store_token(env, erased, TOKEN_A)
    kept_connection = store_token(env, kept, TOKEN_B)
    backup, old_keys, new_keys = (tmp_path / name for name in ("data", "keys-1", "keys-2"))
    assert run_cli(env, "backup", "create", "--out", str(backup)).returncode == 0
    assert run_cli(env, "backup", "keys", "--out", str(old_keys)).returncode == 0
    destroy_data_key(env, erased)
    exported = run_cli(env, "backup", "keys", "--out", str(new_keys), "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["data_keys"] == 2  # system and the kept user
    # total loss: the live database is gone
    lost = {**env, "ECHO_DATABASE_URL": f"sqlite:///{tmp_path / 'gone' / 'nothing.db'}"}

    for keys, erased_readable in ((old_keys, True), (new_keys, False)):
        with empty_database(tmp_path / f"db-{keys.name}") as target:
            restored = run_cli(
                lost,
                "backup",
                "restore",
                str(backup),
                "--database-url",
                target,
                "--keys",
                str(keys),
            )
            assert restored.returncode == 0, restored.stderr
            assert read_token(env, target, kept_connection) == TOKEN_B
            if erased_readable:  # why an old export must be replaced after every erasure
                assert read_token(env, target, erased_connection) == TOKEN_A
            else:
                with pytest.raises(DecryptionError):
                    read_token(env, target, erased_connection)


# --- refusals -------------------------------------------------------------------------------


def test_commands_without_a_backup_key_fail_with_one_line_saying_how_to_fix_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    without = {k: v for k, v in env.items() if k != "ECHO_BACKUP_KEY"}
    result = run_cli(without, "backup", "create", "--out", str(tmp_path / "x"), "--json")

    error = error_of(result)
    assert error["error"] == "backup_key_error"
    assert "ECHO_BACKUP_KEY" in error["message"]
    assert not (tmp_path / "x").exists()


def test_verify_with_another_backup_key_names_the_key_it_needs(
    env: dict[str, str], tmp_path: Path
) -> None:
    backup = tmp_path / "b"
    created = json.loads(run_cli(env, "backup", "create", "--out", str(backup), "--json").stdout)
    other = {**env, "ECHO_BACKUP_KEY": new_kek()}

    error = error_of(run_cli(other, "backup", "verify", str(backup), "--json"))

    assert error["error"] == "backup_key_error"
    assert created["key_id"] in error["message"]
    assert env["ECHO_BACKUP_KEY"] not in error["message"]


def test_a_backup_key_equal_to_the_vault_kek_is_refused_naming_the_variable(
    env: dict[str, str], tmp_path: Path
) -> None:
    same = {**env, "ECHO_BACKUP_KEY": env["ECHO_VAULT_KEK"]}

    result = run_cli(same, "backup", "create", "--out", str(tmp_path / "x"))

    assert result.returncode == 1
    assert result.stderr.startswith("error: ECHO_BACKUP_KEY equals a key in ECHO_VAULT_KEK")
    assert len(result.stderr.splitlines()) == 1
    assert env["ECHO_VAULT_KEK"] not in result.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00garbage\x80\x81" * 10, b"", b"ECHOBK"],
    ids=["bytes", "empty", "short"],
)
def test_a_file_that_is_not_a_backup_is_refused(
    env: dict[str, str], tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "not-a-backup"
    path.write_bytes(content)

    error = error_of(run_cli(env, "backup", "verify", str(path), "--json"))

    assert error["error"] in {"not_a_backup", "backup_truncated"}


def test_a_key_export_is_not_restored_as_a_data_backup(env: dict[str, str], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert run_cli(env, "backup", "keys", "--out", str(keys)).returncode == 0
    with empty_database(tmp_path / "target") as target:
        result = run_cli(env, "backup", "restore", str(keys), "--database-url", target, "--json")

        assert error_of(result)["error"] == "backup_error"
        assert row_counts(target) == {}


def test_create_refuses_to_overwrite_a_file(env: dict[str, str], tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.write_bytes(b"keep me")

    error = error_of(run_cli(env, "backup", "create", "--out", str(existing), "--json"))

    assert error["error"] == "file_exists"
    assert existing.read_bytes() == b"keep me"


def test_restore_refuses_two_key_sources_and_needs_a_database_url(
    env: dict[str, str], tmp_path: Path
) -> None:
    backup = tmp_path / "b"
    assert run_cli(env, "backup", "create", "--out", str(backup)).returncode == 0
    both = run_cli(
        env,
        "backup",
        "restore",
        str(backup),
        "--database-url",
        f"sqlite:///{tmp_path / 'new.db'}",
        "--keys",
        str(backup),
        "--keys-from",
        env["ECHO_DATABASE_URL"],
        "--json",
    )
    missing = run_cli(env, "backup", "restore", str(backup))
    doubled = run_cli(env, "backup", "verify", str(backup), str(backup))

    assert error_of(both)["error"] == "usage"
    assert missing.returncode == doubled.returncode == 2  # click's usage errors
    assert "--database-url" in missing.stderr
    assert "Traceback" not in missing.stderr + doubled.stderr


def test_no_output_of_any_command_holds_a_key_or_a_secret(
    env: dict[str, str], tmp_path: Path
) -> None:
    url = env["ECHO_DATABASE_URL"]
    user = create_user(url)
    store_token(env, user, TOKEN_B)
    backup, keys = tmp_path / "b", tmp_path / "k"
    results = [
        run_cli(env, "backup", "create", "--out", str(backup)),
        run_cli(env, "backup", "keys", "--out", str(keys), "--json"),
        run_cli(env, "backup", "verify", str(backup)),
        run_cli(env, "backup", "verify", str(backup), "--json"),
    ]
    with empty_database(tmp_path / "target") as target:
        results.append(run_cli(env, "backup", "restore", str(backup), "--database-url", target))
    for result in results:
        assert result.returncode == 0, result.stderr
        output = result.stdout + result.stderr
        for secret in (env["ECHO_BACKUP_KEY"], env["ECHO_VAULT_KEK"], user.password):
            assert secret not in output
        assert TOKEN_B.decode() not in output
        assert echo_shaped(output) == []


def test_verify_fails_naming_the_audit_chain_when_a_sealed_event_was_altered(
    env: dict[str, str], tmp_path: Path
) -> None:
    settings = settings_for(env)
    for _ in range(3):
        record_event(settings, EventType.LOGIN_FAILURE, actor="cli", ip="192.0.2.1")
    sealed = run_cli({**env, "ECHO_AUDIT_SEAL_GRACE": "0"}, "worker", "--once")
    assert sealed.returncode == 0, sealed.stderr
    database = Database(settings.database_url)
    try:
        with database.transaction() as session:
            session.execute(
                update(AuditEvent)
                .where(AuditEvent.id == select(func.min(AuditEvent.id)).scalar_subquery())
                .values(ip="203.0.113.9")
            )
    finally:
        database.dispose()
    backup = tmp_path / "b"
    assert run_cli(env, "backup", "create", "--out", str(backup)).returncode == 0

    result = run_cli(env, "backup", "verify", str(backup), "--json")

    assert error_of(result)["error"] == "backup_verification_failed"
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["audit_chain"]["passed"] is False
    assert checks["vault_probe"]["passed"] is True
    assert "error: backup_verification_failed: audit_chain: audit trail broken" in result.stderr


def test_verify_fails_naming_the_vault_probe_when_the_vault_kek_does_not_fit(
    env: dict[str, str], tmp_path: Path
) -> None:
    store_token(env, create_user(env["ECHO_DATABASE_URL"]), TOKEN_B)
    backup = tmp_path / "b"
    assert run_cli(env, "backup", "create", "--out", str(backup)).returncode == 0
    other_kek = {**env, "ECHO_VAULT_KEK": new_kek()}

    result = run_cli(other_kek, "backup", "verify", str(backup), "--json")

    assert error_of(result)["error"] == "backup_verification_failed"
    probe = {c["name"]: c for c in json.loads(result.stdout)["checks"]}["vault_probe"]
    assert probe["passed"] is False
    assert "failed to decrypt" in probe["detail"]


def test_restore_takes_the_data_keys_from_keys_from_and_refuses_an_unreadable_key_source(
    env: dict[str, str], tmp_path: Path
) -> None:
    user = create_user(env["ECHO_DATABASE_URL"])
    connection = store_token(env, user, TOKEN_B)
    backup = tmp_path / "b"
    assert run_cli(env, "backup", "create", "--out", str(backup)).returncode == 0
    gone = tmp_path / "gone.db"
    elsewhere = {**env, "ECHO_DATABASE_URL": f"sqlite:///{gone}"}

    with empty_database(tmp_path / "first") as target:
        refused = run_cli(
            elsewhere, "backup", "restore", str(backup), "--database-url", target, "--json"
        )
        assert error_of(refused)["error"] == "key_source_unavailable"
        assert row_counts(target) == {}
        assert not gone.exists()
    with empty_database(tmp_path / "second") as target:
        restored = run_cli(
            elsewhere,
            "backup",
            "restore",
            str(backup),
            "--database-url",
            target,
            "--keys-from",
            env["ECHO_DATABASE_URL"],
        )
        assert restored.returncode == 0, restored.stderr
        assert read_token(env, target, connection) == TOKEN_B
