"""Keyring: per-owner DEKs stored only wrapped, KEK and DEK rotation, crypto-shredding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError
from echo_identity.crypto.kek import LocalKekProvider, UnknownKekError
from echo_identity.db import Database
from echo_identity.keys.keyring import Keyring, UnknownDataKeyError
from echo_identity.keys.models import DataKey
from tests.support.keks import RecordingKeks

OLD_KEK = bytes(range(32))
NEW_KEK = bytes(range(100, 132))
ALICE, BOB = "user:1", "user:2"
ALICE_TOKEN = "connection:1:refresh_token"
BOB_TOKEN = "connection:2:refresh_token"


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    with database.session() as session:
        yield session


def data_keys(database: Database) -> list[DataKey]:
    """What another connection sees (a read that never waits on the test's open writer)."""
    with database.read_session() as session:
        return list(session.scalars(select(DataKey).order_by(DataKey.created_at)))


def data_key_of(session: Session, owner: str) -> DataKey:
    return session.scalars(select(DataKey).where(DataKey.owner == owner)).one()


def test_decrypt_returns_what_encrypt_was_given_in_a_later_unit_of_work(
    database: Database,
) -> None:
    with database.transaction() as session:
        ciphertext = Keyring(session, LocalKekProvider([OLD_KEK])).encrypt(
            ALICE, b"gho_refresh", ALICE_TOKEN
        )
    assert b"gho_refresh" not in ciphertext
    with database.session() as session:
        keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
        assert keyring.decrypt(ciphertext, ALICE_TOKEN) == b"gho_refresh"


def test_first_encrypt_creates_one_dek_for_the_owner_and_reuses_it(
    database: Database, session: Session
) -> None:
    keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
    first = keyring.encrypt(ALICE, b"one", ALICE_TOKEN)
    second = keyring.encrypt(ALICE, b"two", "connection:1:access_token")
    session.commit()
    [data_key] = data_keys(database)
    assert data_key.owner == ALICE
    assert data_key.retired_at is None
    assert len(data_key.id) == 32
    assert int(data_key.id, 16) >= 0
    assert aead.key_id_of(first) == aead.key_id_of(second) == data_key.id


def test_a_new_dek_is_flushed_but_left_to_the_callers_transaction(
    database: Database, session: Session
) -> None:
    Keyring(session, LocalKekProvider([OLD_KEK])).encrypt(ALICE, b"token", ALICE_TOKEN)
    assert session.scalars(select(DataKey)).all() != []
    assert data_keys(database) == []
    session.rollback()
    assert data_keys(database) == []


def test_dek_is_stored_only_wrapped(database: Database, session: Session) -> None:
    keks = RecordingKeks([OLD_KEK])
    ciphertext = Keyring(session, keks).encrypt(ALICE, b"token", ALICE_TOKEN)
    session.commit()
    [dek] = keks.wrapped
    assert aead.decrypt(dek, ciphertext, ALICE_TOKEN) == b"token"  # it is the DEK in use
    with database.engine.connect() as connection:
        [row] = connection.execute(text("SELECT * FROM data_keys")).all()
    for value in row:
        stored = value if isinstance(value, bytes) else str(value).encode()
        assert dek not in stored
        assert dek.hex().encode() not in stored


def test_each_owner_gets_its_own_dek(session: Session) -> None:
    keks = RecordingKeks([OLD_KEK])
    keyring = Keyring(session, keks)
    alice = keyring.encrypt(ALICE, b"token", ALICE_TOKEN)
    bob = keyring.encrypt(BOB, b"token", BOB_TOKEN)
    assert aead.key_id_of(alice) != aead.key_id_of(bob)
    alice_dek, bob_dek = keks.wrapped
    assert alice_dek != bob_dek
    with pytest.raises(DecryptionError):
        aead.decrypt(bob_dek, alice, ALICE_TOKEN)


def test_ciphertext_moved_to_another_row_or_field_does_not_decrypt(session: Session) -> None:
    keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
    ciphertext = keyring.encrypt(ALICE, b"token", ALICE_TOKEN)
    for other in (BOB_TOKEN, "connection:1:access_token"):
        with pytest.raises(DecryptionError):
            keyring.decrypt(ciphertext, other)


def test_repeated_decrypts_unwrap_the_dek_once(database: Database) -> None:
    with database.transaction() as session:
        ciphertext = Keyring(session, LocalKekProvider([OLD_KEK])).encrypt(
            ALICE, b"token", ALICE_TOKEN
        )
    keks = RecordingKeks([OLD_KEK])
    with database.session() as session:
        keyring = Keyring(session, keks)
        for _ in range(3):
            assert keyring.decrypt(ciphertext, ALICE_TOKEN) == b"token"
    assert keks.unwraps == 1


def test_rewrap_all_moves_deks_to_the_new_kek_and_old_ciphertexts_survive_dropping_the_old(
    database: Database,
) -> None:
    with database.transaction() as session:
        keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
        alice = keyring.encrypt(ALICE, b"alice-token", ALICE_TOKEN)
        bob = keyring.encrypt(BOB, b"bob-token", BOB_TOKEN)
    wrapped_before = {data_key.id: data_key.wrapped_key for data_key in data_keys(database)}

    rotating = LocalKekProvider([NEW_KEK, OLD_KEK])
    with database.transaction() as session:
        keyring = Keyring(session, rotating)
        assert keyring.decrypt(alice, ALICE_TOKEN) == b"alice-token"  # readable mid-rotation
        assert keyring.rewrap_all() == 2
    with database.transaction() as session:
        assert Keyring(session, rotating).rewrap_all() == 0

    for data_key in data_keys(database):
        assert data_key.kek_id == rotating.primary_id
        assert data_key.wrapped_key != wrapped_before[data_key.id]
    with database.session() as session:
        keyring = Keyring(session, LocalKekProvider([NEW_KEK]))
        assert keyring.decrypt(alice, ALICE_TOKEN) == b"alice-token"
        assert keyring.decrypt(bob, BOB_TOKEN) == b"bob-token"


def test_rewrap_all_covers_more_deks_than_one_batch(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("echo_identity.keys.keyring.REWRAP_BATCH_SIZE", 2)
    owners = [f"user:{n}" for n in range(5)]
    with database.transaction() as session:
        keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
        for owner in owners:
            keyring.encrypt(owner, b"token", "ctx")
    with database.transaction() as session:
        assert Keyring(session, LocalKekProvider([NEW_KEK, OLD_KEK])).rewrap_all() == 5
    assert {data_key.kek_id for data_key in data_keys(database)} == {
        LocalKekProvider([NEW_KEK]).primary_id
    }


def test_dek_wrapped_by_a_removed_kek_fails_naming_that_kek(database: Database) -> None:
    with database.transaction() as session:
        ciphertext = Keyring(session, LocalKekProvider([OLD_KEK])).encrypt(
            ALICE, b"token", ALICE_TOKEN
        )
    old_id = LocalKekProvider([OLD_KEK]).primary_id
    with database.session() as session:
        keyring = Keyring(session, LocalKekProvider([NEW_KEK]))
        with pytest.raises(UnknownKekError, match=old_id):
            keyring.decrypt(ciphertext, ALICE_TOKEN)
        with pytest.raises(UnknownKekError, match=old_id):
            keyring.rewrap_all()


def test_wrapped_dek_copied_into_another_owners_row_does_not_unwrap(database: Database) -> None:
    with database.transaction() as session:
        keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
        keyring.encrypt(ALICE, b"alice-token", ALICE_TOKEN)
        bob = keyring.encrypt(BOB, b"bob-token", BOB_TOKEN)
    with database.transaction() as session:
        alice_key, bob_key = (data_key_of(session, owner) for owner in (ALICE, BOB))
        bob_key.wrapped_key = alice_key.wrapped_key
    with database.session() as session:
        keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
        with pytest.raises(DecryptionError):
            keyring.decrypt(bob, BOB_TOKEN)


def test_wrapped_dek_copied_into_another_row_of_the_same_owner_does_not_unwrap(
    database: Database,
) -> None:
    with database.transaction() as session:
        keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
        retired = aead.key_id_of(keyring.encrypt(ALICE, b"old-token", ALICE_TOKEN))
        keyring.rotate(ALICE)
        current = keyring.encrypt(ALICE, b"new-token", ALICE_TOKEN)
    with database.transaction() as session:
        retired_key = session.get(DataKey, retired)
        current_key = session.get(DataKey, aead.key_id_of(current))
        assert retired_key is not None
        assert current_key is not None
        current_key.wrapped_key = retired_key.wrapped_key
    with database.session() as session:
        keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
        # The swapped row is refused outright, so nothing is ever encrypted under it.
        with pytest.raises(DecryptionError):
            keyring.encrypt(ALICE, b"newer-token", ALICE_TOKEN)
        with pytest.raises(DecryptionError):
            keyring.decrypt(current, ALICE_TOKEN)


def test_rotate_retires_the_current_dek_and_old_ciphertexts_still_decrypt(
    database: Database,
) -> None:
    keks = LocalKekProvider([OLD_KEK])
    with database.transaction() as session:
        keyring = Keyring(session, keks)
        old = keyring.encrypt(ALICE, b"old-token", ALICE_TOKEN)
        new_key = keyring.rotate(ALICE)
        new = keyring.encrypt(ALICE, b"new-token", ALICE_TOKEN)
    assert aead.key_id_of(new) == new_key.id != aead.key_id_of(old)
    retired = {data_key.id: data_key.retired_at for data_key in data_keys(database)}
    assert retired[new_key.id] is None
    assert retired[aead.key_id_of(old)] is not None
    with database.session() as session:
        keyring = Keyring(session, keks)
        assert keyring.decrypt(old, ALICE_TOKEN) == b"old-token"
        assert keyring.decrypt(new, ALICE_TOKEN) == b"new-token"


def test_rotate_gives_an_owner_without_a_dek_its_first(session: Session) -> None:
    keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
    data_key = keyring.rotate(ALICE)
    assert data_key.retired_at is None
    assert aead.key_id_of(keyring.encrypt(ALICE, b"token", ALICE_TOKEN)) == data_key.id


def test_destroy_makes_the_owners_ciphertexts_unreadable_and_spares_others(
    database: Database,
) -> None:
    keks = LocalKekProvider([OLD_KEK])
    with database.transaction() as session:
        keyring = Keyring(session, keks)
        before_rotation = keyring.encrypt(ALICE, b"alice-old", ALICE_TOKEN)
        keyring.rotate(ALICE)
        after_rotation = keyring.encrypt(ALICE, b"alice-new", ALICE_TOKEN)
        bob = keyring.encrypt(BOB, b"bob-token", BOB_TOKEN)
        assert keyring.decrypt(after_rotation, ALICE_TOKEN) == b"alice-new"  # now cached
        assert keyring.destroy(ALICE) == 2
        # The instance that had the DEKs cached forgets them too.
        with pytest.raises(UnknownDataKeyError):
            keyring.decrypt(after_rotation, ALICE_TOKEN)
    assert [data_key.owner for data_key in data_keys(database)] == [BOB]
    with database.session() as session:
        keyring = Keyring(session, keks)
        for ciphertext in (before_rotation, after_rotation):
            with pytest.raises(UnknownDataKeyError) as caught:
                keyring.decrypt(ciphertext, ALICE_TOKEN)
            assert aead.key_id_of(ciphertext) in str(caught.value)
            assert isinstance(caught.value, DecryptionError)
        assert keyring.decrypt(bob, BOB_TOKEN) == b"bob-token"
        assert keyring.destroy(ALICE) == 0


def test_encrypt_after_destroy_uses_a_fresh_dek(session: Session) -> None:
    keyring = Keyring(session, LocalKekProvider([OLD_KEK]))
    old = keyring.encrypt(ALICE, b"token", ALICE_TOKEN)
    keyring.destroy(ALICE)
    new = keyring.encrypt(ALICE, b"token", ALICE_TOKEN)
    assert aead.key_id_of(new) != aead.key_id_of(old)
    assert keyring.decrypt(new, ALICE_TOKEN) == b"token"


@pytest.mark.parametrize("owner", ["", "user:" + "9" * 60], ids=["empty", "too-long"])
def test_owners_must_be_1_to_64_characters(session: Session, owner: str) -> None:
    with pytest.raises(ValueError, match="owner"):
        Keyring(session, LocalKekProvider([OLD_KEK])).encrypt(owner, b"token", "ctx")


class StatementCounter:
    """Counts the SQL statements an engine runs while it is active."""

    def __init__(self, database: Database) -> None:
        self._engine = database.engine
        self.statements: list[str] = []

    def _count(self, *args: object) -> None:
        statement = str(args[2])
        if not statement.startswith("BEGIN"):
            self.statements.append(statement)

    def __enter__(self) -> StatementCounter:
        event.listen(self._engine, "after_cursor_execute", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self._engine, "after_cursor_execute", self._count)


def test_encryptor_encrypts_under_the_current_dek_like_encrypt(database: Database) -> None:
    keks = LocalKekProvider([OLD_KEK])
    with database.transaction() as session:
        keyring = Keyring(session, keks)
        first = keyring.encrypt(ALICE, b"one", ALICE_TOKEN)
        encryptor = keyring.encryptor(ALICE)
        second = encryptor.encrypt(b"two", "connection:1:access_token")
    assert encryptor.key_id == aead.key_id_of(first) == aead.key_id_of(second)
    assert not encryptor.new
    assert "dek" not in repr(encryptor).lower().replace("key_id", "")
    with database.session() as session:
        keyring = Keyring(session, keks)
        assert keyring.decrypt(second, "connection:1:access_token") == b"two"
        with pytest.raises(DecryptionError):
            keyring.decrypt(second, ALICE_TOKEN)


def test_encryptors_reuse_current_deks_and_create_the_missing_in_one_flush(
    database: Database,
) -> None:
    keks = RecordingKeks([OLD_KEK])
    with database.transaction() as session:
        Keyring(session, keks).encrypt(ALICE, b"token", ALICE_TOKEN)
    owners = {ALICE, BOB, "user:3", "system"}
    with database.transaction() as session, StatementCounter(database) as counter:
        encryptors = Keyring(session, keks).encryptors(owners)
    assert encryptors.keys() == owners
    assert {owner for owner, e in encryptors.items() if e.new} == owners - {ALICE}
    inserts = [s for s in counter.statements if s.startswith("INSERT INTO data_keys")]
    selects = [s for s in counter.statements if s.startswith("SELECT")]
    assert (len(inserts), len(selects)) == (1, 1)  # not one round trip per owner
    stored = {key.owner: key.id for key in data_keys(database)}
    assert {owner: e.key_id for owner, e in encryptors.items()} == stored


@pytest.mark.postgres  # on SQLite the write lock, taken at BEGIN, rules this race out
def test_encryptors_use_a_dek_that_a_concurrent_transaction_created_first(
    database: Database,
) -> None:
    assert database.dialect == "postgresql", "set ECHO_TEST_DATABASE_URL (make test-postgres)"
    keks = LocalKekProvider([OLD_KEK])
    raced: list[bytes] = []

    def create_alices_dek_after_the_lookup(*args: Any) -> None:
        """Right after the batch lookup found no DEK for Alice, another transaction gives
        her one (as the service's first encryption for her would)."""
        statement: str = args[2]
        if raced or not statement.startswith("SELECT data_keys.") or "IN (" not in statement:
            return
        with database.transaction() as other:
            raced.append(Keyring(other, keks).encrypt(ALICE, b"first", ALICE_TOKEN))

    event.listen(database.engine, "after_cursor_execute", create_alices_dek_after_the_lookup)
    try:
        with database.session() as session:
            encryptors = Keyring(session, keks).encryptors({ALICE, BOB})
            session.commit()
    finally:
        event.remove(database.engine, "after_cursor_execute", create_alices_dek_after_the_lookup)
    assert len(raced) == 1
    [winner] = [key for key in data_keys(database) if key.owner == ALICE]
    assert encryptors[ALICE].key_id == winner.id
    assert not encryptors[ALICE].new
    assert encryptors[BOB].new


def test_preload_unwraps_many_deks_in_one_query_and_decrypt_then_needs_none(
    database: Database,
) -> None:
    keks = LocalKekProvider([OLD_KEK])
    owners = [f"user:{n}" for n in range(1, 8)]
    with database.transaction() as session:
        keyring = Keyring(session, keks)
        ciphertexts = {o: keyring.encrypt(o, o.encode(), f"connection:{o}:x") for o in owners}
    with database.session() as session, StatementCounter(database) as counter:
        keyring = Keyring(session, keks)
        keyring.preload({aead.key_id_of(c) for c in ciphertexts.values()} | {"no-such-dek"})
        loaded = len(counter.statements)
        for owner, ciphertext in ciphertexts.items():
            assert keyring.decrypt(ciphertext, f"connection:{owner}:x") == owner.encode()
        with pytest.raises(UnknownDataKeyError):
            keyring.decrypt(aead.encrypt(bytes(32), "no-such-dek", b"x", "c"), "c")
    assert loaded == 1
    assert len(counter.statements) == 2  # only the unknown DEK's lookup came after
