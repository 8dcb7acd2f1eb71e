"""Key rotation: every secret survives, old keys open nothing, an interrupted run resumes, and a
concurrent write is never overwritten."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, inspect, select, text, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from echo_identity.audit.models import AuditSigningKey
from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError
from echo_identity.crypto.kek import LocalKekProvider, UnknownKekError, local_kek_id
from echo_identity.db import Database, utcnow
from echo_identity.idp.keys import KeySchedule, SigningKeyStore
from echo_identity.idp.models import SigningKey
from echo_identity.keys.keyring import Keyring
from echo_identity.keys.models import DataKey
from echo_identity.keys.rotation import rotate_deks, rotate_kek
from echo_identity.schema import ENCRYPTED_COLUMNS
from echo_identity.vault.models import Connection, Provider
from tests.factories import create_user
from tests.support.keks import RecordingKeks

OLD_KEK = bytes(range(32))
NEW_KEK = bytes(range(100, 132))
ACCESS = "vault_connections.access_token_ciphertext"
REFRESH = "vault_connections.refresh_token_ciphertext"
CLIENT_SECRET = "vault_providers.client_secret_ciphertext"
PRIVATE_KEY = "signing_keys.private_key_ciphertext"
# column -> (ciphertext attribute, primary key attribute), written out here rather than taken
# from the registry under test
COLUMNS: dict[str, tuple[InstrumentedAttribute[Any], InstrumentedAttribute[Any]]] = {
    ACCESS: (Connection.access_token_ciphertext, Connection.id),
    REFRESH: (Connection.refresh_token_ciphertext, Connection.id),
    CLIENT_SECRET: (Provider.client_secret_ciphertext, Provider.id),
    PRIVATE_KEY: (SigningKey.private_key_ciphertext, SigningKey.kid),
    "audit_signing_keys.private_key_ciphertext": (
        AuditSigningKey.private_key_ciphertext,
        AuditSigningKey.kid,
    ),
}


@dataclass(frozen=True)
class Secret:
    """One stored ciphertext and the plaintext it must keep through any rotation."""

    column: str
    row: int | str
    owner: str
    context: str
    plaintext: bytes


def fill_vault(database: Database, keks: LocalKekProvider | RecordingKeks) -> list[Secret]:
    """Three users connected to two providers (one connection without a refresh token) and a
    signing key, every secret encrypted with the contexts the service uses."""
    users = [create_user(database) for _ in range(3)]
    secrets: list[Secret] = []
    with database.transaction() as session:
        keyring = Keyring(session, keks)

        def encrypt(column: str, row: int | str, owner: str, context: str) -> bytes:
            plaintext = f"{context} plaintext".encode()
            secrets.append(Secret(column, row, owner, context, plaintext))
            return keyring.encrypt(owner, plaintext, context)

        providers = []
        for name in ("github", "google"):
            provider = Provider(
                name=name,
                authorize_url=f"https://{name}.example/authorize",
                token_url=f"https://{name}.example/token",
                client_id=f"{name}-client",
                client_secret_ciphertext=b"",
            )
            session.add(provider)
            session.flush()
            provider.client_secret_ciphertext = encrypt(
                CLIENT_SECRET, provider.id, "system", f"provider:{provider.id}:client_secret"
            )
            providers.append(provider)
        for user in users:
            for provider in providers:
                connection = Connection(user_id=user.id, provider_id=provider.id)
                session.add(connection)
                session.flush()
                owner = f"user:{user.id}"
                connection.access_token_ciphertext = encrypt(
                    ACCESS, connection.id, owner, f"connection:{connection.id}:access_token"
                )
                if (user, provider) != (users[-1], providers[-1]):
                    connection.refresh_token_ciphertext = encrypt(
                        REFRESH, connection.id, owner, f"connection:{connection.id}:refresh_token"
                    )
        schedule = KeySchedule(publish_ahead=timedelta(0), retention=timedelta(hours=1))
        signing_key = SigningKeyStore(session, keyring, schedule).create("ES256", utcnow())
        context = f"signing_key:{signing_key.kid}:private_key"
        plaintext = keyring.decrypt(signing_key.private_key_ciphertext, context)
        secrets.append(Secret(PRIVATE_KEY, signing_key.kid, "system", context, plaintext))
    return secrets


def stored(session: Session, secret: Secret) -> bytes:
    column, key = COLUMNS[secret.column]
    ciphertext: bytes = session.scalars(select(column).where(key == secret.row)).one()
    return ciphertext


def data_key_ids(database: Database, *, retired: bool | None = None) -> set[str]:
    statement = select(DataKey.id)
    if retired is not None:
        statement = statement.where(
            DataKey.retired_at.is_not(None) if retired else DataKey.retired_at.is_(None)
        )
    with database.session() as session:
        return set(session.scalars(statement))


def assert_all_decrypt_under_current_deks(
    database: Database, keks: LocalKekProvider, secrets: list[Secret]
) -> None:
    current = data_key_ids(database, retired=False)
    with database.session() as session:
        keyring = Keyring(session, keks)
        for secret in secrets:
            ciphertext = stored(session, secret)
            assert keyring.decrypt(ciphertext, secret.context) == secret.plaintext, secret
            assert aead.key_id_of(ciphertext) in current, secret


def owners_of(secrets: list[Secret]) -> set[str]:
    return {secret.owner for secret in secrets}


class SimulatedCrashError(Exception):
    """Stands for a crash of the rotating process."""


def stop_after_first_batch(done: int, total: int) -> None:
    raise SimulatedCrashError


def test_after_kek_and_dek_rotation_every_secret_decrypts_under_a_new_dek(
    database: Database,
) -> None:
    secrets = fill_vault(database, LocalKekProvider([OLD_KEK]))
    old_deks = data_key_ids(database)
    both = LocalKekProvider([NEW_KEK, OLD_KEK])
    with database.session() as session:
        assert rotate_kek(session, Keyring(session, both)) == len(old_deks)
    with database.session() as session:
        report = rotate_deks(session, Keyring(session, both), ENCRYPTED_COLUMNS, batch_size=2)

    assert report.failures == []
    assert report.reencrypted == report.ciphertexts == len(secrets)
    assert report.retired_data_keys == report.deleted_data_keys == len(old_deks)
    assert report.new_data_keys == len(owners_of(secrets))
    assert_all_decrypt_under_current_deks(database, LocalKekProvider([NEW_KEK]), secrets)
    assert data_key_ids(database).isdisjoint(old_deks)
    with database.session() as session:
        kek_ids = set(session.scalars(select(DataKey.kek_id)))
    assert kek_ids == {local_kek_id(NEW_KEK)}


def test_after_both_rotations_the_retired_kek_alone_opens_no_secret(database: Database) -> None:
    secrets = fill_vault(database, LocalKekProvider([OLD_KEK]))
    both = LocalKekProvider([NEW_KEK, OLD_KEK])
    with database.session() as session:
        rotate_kek(session, Keyring(session, both))
        rotate_deks(session, Keyring(session, both), ENCRYPTED_COLUMNS)

    with database.session() as session:
        old_kek_only = Keyring(session, LocalKekProvider([OLD_KEK]))
        for secret in secrets:
            with pytest.raises(UnknownKekError):
                old_kek_only.decrypt(stored(session, secret), secret.context)


def test_old_deks_from_a_backup_open_no_secret_after_dek_rotation(database: Database) -> None:
    keks = RecordingKeks([OLD_KEK])
    secrets = fill_vault(database, keks)
    backup = list(keks.wrapped)  # every DEK in use before the rotation, as a leak would give
    with database.session() as session:
        rotate_deks(session, Keyring(session, keks), ENCRYPTED_COLUMNS)

    with database.session() as session:
        for secret in secrets:
            ciphertext = stored(session, secret)
            for old_dek in backup:
                with pytest.raises(DecryptionError):
                    aead.decrypt(old_dek, ciphertext, secret.context)


def test_an_interrupted_rotation_resumes_without_creating_a_dek_twice(database: Database) -> None:
    keks = LocalKekProvider([OLD_KEK])
    secrets = fill_vault(database, keks)
    old_deks = data_key_ids(database)
    with database.session() as session, pytest.raises(SimulatedCrashError):
        rotate_deks(
            session,
            Keyring(session, keks),
            ENCRYPTED_COLUMNS,
            batch_size=2,
            progress=stop_after_first_batch,
        )
    created_before_the_crash = data_key_ids(database, retired=False)
    assert data_key_ids(database, retired=True) == old_deks  # nothing deleted yet
    with database.session() as session:
        moved = [
            s for s in secrets if aead.key_id_of(stored(session, s)) in created_before_the_crash
        ]
    assert 0 < len(moved) < len(secrets)

    with database.session() as session:
        report = rotate_deks(session, Keyring(session, keks), ENCRYPTED_COLUMNS, batch_size=2)

    assert report.resumed
    assert report.retired_data_keys == 0  # the first run's new DEKs were not retired again
    assert report.reencrypted == len(secrets) - len(moved)  # nothing moved twice
    assert report.deleted_data_keys == len(old_deks)
    final = data_key_ids(database)
    assert created_before_the_crash <= final
    assert len(final) == len(owners_of(secrets))  # one DEK per owner, none created twice
    assert_all_decrypt_under_current_deks(database, keks, secrets)


def test_a_rotation_after_a_finished_one_starts_a_new_one(database: Database) -> None:
    keks = LocalKekProvider([OLD_KEK])
    secrets = fill_vault(database, keks)
    with database.session() as session:
        rotate_deks(session, Keyring(session, keks), ENCRYPTED_COLUMNS)
    first_deks = data_key_ids(database)
    with database.session() as session:
        report = rotate_deks(session, Keyring(session, keks), ENCRYPTED_COLUMNS)

    assert not report.resumed
    assert report.retired_data_keys == report.deleted_data_keys == len(first_deks)
    assert report.reencrypted == len(secrets)
    assert data_key_ids(database).isdisjoint(first_deks)
    assert_all_decrypt_under_current_deks(database, keks, secrets)


def test_a_token_refreshed_during_rotation_keeps_the_refreshed_value(database: Database) -> None:
    keks = LocalKekProvider([OLD_KEK])
    secrets = fill_vault(database, keks)
    target = next(s for s in secrets if s.column == ACCESS)  # in the first batch
    refreshed = b"the refreshed access token"
    refreshes: list[bytes] = []

    def refresh_after_the_batch_is_read(*args: Any) -> None:
        statement: str = args[2]
        if refreshes or not statement.startswith("SELECT vault_connections.id"):
            return
        with database.transaction() as session:
            ciphertext = Keyring(session, keks).encrypt(target.owner, refreshed, target.context)
            session.execute(
                update(Connection)
                .where(Connection.id == target.row)
                .values(access_token_ciphertext=ciphertext)
            )
        refreshes.append(ciphertext)

    event.listen(database.engine, "after_cursor_execute", refresh_after_the_batch_is_read)
    with database.session() as session:
        report = rotate_deks(session, Keyring(session, keks), ENCRYPTED_COLUMNS, batch_size=2)
    event.remove(database.engine, "after_cursor_execute", refresh_after_the_batch_is_read)

    assert len(refreshes) == 1
    assert report.changed_concurrently == 1
    with database.session() as session:
        assert stored(session, target) == refreshes[0]
        assert Keyring(session, keks).decrypt(refreshes[0], target.context) == refreshed
    # The row's other token kept its old DEK alive; the next run finishes the rotation.
    with database.session() as session:
        again = rotate_deks(session, Keyring(session, keks), ENCRYPTED_COLUMNS)
    assert again.resumed
    assert again.reencrypted == 1
    expected = [
        Secret(s.column, s.row, s.owner, s.context, refreshed) if s == target else s
        for s in secrets
    ]
    assert_all_decrypt_under_current_deks(database, keks, expected)


def test_a_write_that_looked_up_its_dek_before_the_rotation_stays_readable(
    database: Database,
) -> None:
    keks = LocalKekProvider([OLD_KEK])
    secrets = fill_vault(database, keks)
    target = next(s for s in secrets if s.column == ACCESS)
    late = b"written by a refresh that began before the rotation"
    looked_up = threading.Event()

    def slow_refresh() -> None:
        with database.session() as session:
            ciphertext = Keyring(session, keks).encrypt(target.owner, late, target.context)
            looked_up.set()
            time.sleep(0.5)  # on PostgreSQL the rotation retires the DEK meanwhile
            session.execute(
                update(Connection)
                .where(Connection.id == target.row)
                .values(access_token_ciphertext=ciphertext)
            )
            session.commit()

    refresh = threading.Thread(target=slow_refresh)
    refresh.start()
    assert looked_up.wait(timeout=10)
    with database.session() as session:
        report = rotate_deks(session, Keyring(session, keks), ENCRYPTED_COLUMNS)
    refresh.join()

    assert not report.deletion_deferred
    with database.session() as session:
        assert Keyring(session, keks).decrypt(stored(session, target), target.context) == late


def test_an_unreadable_ciphertext_is_reported_and_keeps_its_dek(database: Database) -> None:
    keks = LocalKekProvider([OLD_KEK])
    secrets = fill_vault(database, keks)
    damaged = next(s for s in secrets if s.column == REFRESH)
    with database.transaction() as session:
        ciphertext = stored(session, damaged)
        session.execute(
            update(Connection)
            .where(Connection.id == damaged.row)
            .values(refresh_token_ciphertext=ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]))
        )
    with database.session() as session:
        report = rotate_deks(session, Keyring(session, keks), ENCRYPTED_COLUMNS)

    [failure] = report.failures
    assert (failure.field, failure.row, failure.code) == (
        REFRESH,
        str(damaged.row),
        "decryption_failed",
    )
    assert aead.key_id_of(ciphertext) in data_key_ids(database, retired=True)
    assert report.reencrypted == len(secrets) - 1
    assert_all_decrypt_under_current_deks(database, keks, [s for s in secrets if s != damaged])


def test_reencryption_leaves_updated_at_alone(database: Database) -> None:
    keks = LocalKekProvider([OLD_KEK])
    fill_vault(database, keks)
    with database.session() as session:
        before = session.execute(select(Connection.id, Connection.updated_at)).all()
        report = rotate_deks(session, Keyring(session, keks), ENCRYPTED_COLUMNS)
    with database.session() as session:
        after = session.execute(select(Connection.id, Connection.updated_at)).all()
    assert report.reencrypted > 0
    assert sorted(after) == sorted(before)


def test_every_ciphertext_column_in_the_schema_is_registered_for_rotation(
    database: Database,
) -> None:
    # Phase 3 deletes DEKs that no registered column references: an unregistered encrypted
    # column would lose its secrets.
    inspector = inspect(database.engine)
    in_schema = {
        f"{table}.{column['name']}"
        for table in inspector.get_table_names()
        for column in inspector.get_columns(table)
        if column["name"].endswith("_ciphertext")
    }
    assert in_schema == {encrypted.name for encrypted in ENCRYPTED_COLUMNS} == set(COLUMNS)


def test_rotate_deks_refuses_an_empty_batch(database: Database) -> None:
    with database.session() as session, pytest.raises(ValueError, match="at least 1"):
        rotate_deks(
            session, Keyring(session, LocalKekProvider([OLD_KEK])), ENCRYPTED_COLUMNS, batch_size=0
        )


def test_every_secret_stays_readable_while_the_rotation_runs(database: Database) -> None:
    keks = LocalKekProvider([OLD_KEK])
    secrets = fill_vault(database, keks)
    old_deks = data_key_ids(database)
    mixed_states = 0  # reads that met old and new DEKs side by side
    failures: list[BaseException] = []
    rotating = threading.Event()
    reads = 0

    def read_every_secret() -> set[str]:
        """What the service does to hand a token out: a fresh unit of work and the Keyring."""
        with database.read_session() as session:
            keyring = Keyring(session, keks)
            for secret in secrets:
                ciphertext = stored(session, secret)
                assert keyring.decrypt(ciphertext, secret.context) == secret.plaintext, secret
            return {aead.key_id_of(stored(session, secret)) for secret in secrets}

    def read_between_batches(done: int, total: int) -> None:
        nonlocal mixed_states
        key_ids = read_every_secret()
        if key_ids & old_deks and key_ids - old_deks:
            mixed_states += 1

    def keep_reading() -> None:
        nonlocal reads
        try:
            while rotating.is_set():
                read_every_secret()
                reads += 1
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    reader = threading.Thread(target=keep_reading)
    rotating.set()
    reader.start()
    try:
        with database.session() as session:
            report = rotate_deks(
                session,
                Keyring(session, keks),
                ENCRYPTED_COLUMNS,
                batch_size=2,
                progress=read_between_batches,
            )
    finally:
        rotating.clear()
        reader.join()

    assert failures == []
    assert reads > 0
    assert mixed_states > 0
    assert report.reencrypted == len(secrets)
    assert_all_decrypt_under_current_deks(database, keks, secrets)


@pytest.mark.postgres  # page placement (fillfactor, HOT updates) is PostgreSQL's
def test_on_postgresql_reencryption_rewrites_each_row_inside_its_own_page(
    database: Database,
) -> None:
    # An update that stays in its page and changes no indexed column is a HOT update: no new
    # entry in any of vault_connections' indexes. Migration 0007 leaves the room for it.
    assert database.dialect == "postgresql", "set ECHO_TEST_DATABASE_URL (make test-postgres)"
    keks = LocalKekProvider([OLD_KEK])
    users = [create_user(database) for _ in range(2)]
    with database.transaction() as session:
        encryptors = Keyring(session, keks).encryptors({f"user:{u.id}" for u in users})
        for n in range(30):
            provider = Provider(
                name=f"provider{n}",
                authorize_url="https://p.example/authorize",
                token_url="https://p.example/token",
                client_id="client",
                client_secret_ciphertext=b"",
            )
            session.add(provider)
            session.flush()
            for user in users:
                connection = Connection(user_id=user.id, provider_id=provider.id)
                session.add(connection)
                session.flush()
                encrypt = encryptors[f"user:{user.id}"].encrypt
                connection.access_token_ciphertext = encrypt(
                    bytes(200), f"connection:{connection.id}:access_token"
                )
                connection.refresh_token_ciphertext = encrypt(
                    bytes(200), f"connection:{connection.id}:refresh_token"
                )
            provider.client_secret_ciphertext = Keyring(session, keks).encrypt(
                "system", b"secret", f"provider:{provider.id}:client_secret"
            )
    pages = text("SELECT id, (ctid::text::point)[0] FROM vault_connections ORDER BY id")
    with database.engine.connect() as sql:
        before = sql.execute(pages).all()
    with database.session() as session:
        report = rotate_deks(session, Keyring(session, keks), ENCRYPTED_COLUMNS, batch_size=1000)
    with database.engine.connect() as sql:
        after = sql.execute(pages).all()

    assert report.reencrypted >= 120
    assert len({page for _, page in before}) >= 4  # several pages, each filled to the limit
    assert after == before
