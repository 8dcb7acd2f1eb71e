"""The keyring factory's shared DEK cache: a hot decrypt needs neither a ``data_keys`` read
nor the KEK provider, and a destroyed DEK stops decrypting within a second everywhere (at
once in the process that destroyed it)."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from echo_identity.cache import FreshFor
from echo_identity.crypto.kek import LocalKekProvider
from echo_identity.db import Database
from echo_identity.keys.keyring import Keyring, UnknownDataKeyError
from tests.support.keks import RecordingKeks
from tests.support.stopped_clock import StoppedClock

KEK = bytes(range(32))
OWNER = "user:1"
CONTEXT = "connection:1:access_token"


def encrypted(database: Database) -> bytes:
    with database.transaction() as session:
        return Keyring(session, LocalKekProvider([KEK])).encrypt(OWNER, b"gho_secret", CONTEXT)


def statements_of(database: Database) -> list[str]:
    seen: list[str] = []
    event.listen(
        database.engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_rest: seen.append(statement),
    )
    return seen


def test_later_units_of_work_decrypt_without_a_read_or_an_unwrap(database: Database) -> None:
    ciphertext = encrypted(database)
    keks = RecordingKeks([KEK])
    shared: FreshFor[bytes] = FreshFor(StoppedClock())
    with database.session() as session:
        assert Keyring(session, keks, shared).decrypt(ciphertext, CONTEXT) == b"gho_secret"
    unwraps = keks.unwraps
    statements = statements_of(database)
    for _ in range(3):  # three more requests, each with its own session and keyring
        with database.session() as session:
            assert Keyring(session, keks, shared).decrypt(ciphertext, CONTEXT) == b"gho_secret"
    assert keks.unwraps == unwraps
    assert not [s for s in statements if "data_keys" in s]


def test_a_dek_destroyed_here_is_forgotten_at_once(database: Database) -> None:
    ciphertext = encrypted(database)
    shared: FreshFor[bytes] = FreshFor(StoppedClock())
    keks = LocalKekProvider([KEK])
    with database.session() as session:
        Keyring(session, keks, shared).decrypt(ciphertext, CONTEXT)
    with database.transaction() as session:
        assert Keyring(session, keks, shared).destroy(OWNER) == 1
    with database.session() as session, pytest.raises(UnknownDataKeyError):
        Keyring(session, keks, shared).decrypt(ciphertext, CONTEXT)


def test_a_dek_destroyed_by_another_process_stops_decrypting_within_a_second(
    database: Database,
) -> None:
    ciphertext = encrypted(database)
    clock = StoppedClock()
    ours: FreshFor[bytes] = FreshFor(clock)
    keks = LocalKekProvider([KEK])
    with database.session() as session:
        Keyring(session, keks, ours).decrypt(ciphertext, CONTEXT)
    with database.transaction() as session:  # another worker: its own cache
        Keyring(session, keks, FreshFor(clock)).destroy(OWNER)
    with database.session() as session:  # still within the second
        assert Keyring(session, keks, ours).decrypt(ciphertext, CONTEXT) == b"gho_secret"
    clock.advance(1.0)
    with database.session() as session, pytest.raises(UnknownDataKeyError):
        Keyring(session, keks, ours).decrypt(ciphertext, CONTEXT)
