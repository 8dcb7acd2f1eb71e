"""Passwords: argon2id hashes, verification that never raises, rehash when parameters change."""

from __future__ import annotations

import pytest
from argon2 import extract_parameters

from echo_identity.accounts.passwords import Passwords, acceptable_password
from tests.factories import fast_passwords


def test_hash_is_argon2id_with_the_configured_parameters() -> None:
    password_hash = Passwords(time_cost=2, memory_cost=8192, parallelism=1).hash("correct horse")

    assert password_hash.startswith("$argon2id$")
    parameters = extract_parameters(password_hash)
    assert (parameters.time_cost, parameters.memory_cost, parameters.parallelism) == (2, 8192, 1)


def test_hashing_the_same_password_twice_gives_different_salted_hashes() -> None:
    passwords = fast_passwords()
    assert passwords.hash("correct horse") != passwords.hash("correct horse")


def test_verify_accepts_the_right_password_and_refuses_another() -> None:
    passwords = fast_passwords()
    password_hash = passwords.hash("correct horse")

    assert passwords.verify(password_hash, "correct horse") is True
    assert passwords.verify(password_hash, "correct horsE") is False


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not-a-hash",
        "$argon2id$v=19$m=8192,t=1,p=1$garbage",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
    ],
    ids=["empty", "text", "truncated-argon2", "bcrypt"],
)
def test_verify_against_an_unreadable_hash_is_false(garbage: str) -> None:
    assert fast_passwords().verify(garbage, "correct horse") is False


def test_needs_rehash_only_when_parameters_changed() -> None:
    password_hash = Passwords(time_cost=1, memory_cost=8192, parallelism=1).hash("correct horse")

    assert not Passwords(time_cost=1, memory_cost=8192, parallelism=1).needs_rehash(password_hash)
    assert Passwords(time_cost=2, memory_cost=8192, parallelism=1).needs_rehash(password_hash)
    assert Passwords(time_cost=1, memory_cost=16384, parallelism=1).needs_rehash(password_hash)
    assert Passwords(time_cost=1, memory_cost=8192, parallelism=2).needs_rehash(password_hash)


@pytest.mark.parametrize(
    ("length", "acceptable"), [(7, False), (8, True), (1024, True), (1025, False)]
)
def test_password_length_policy_is_8_to_1024_characters(length: int, acceptable: bool) -> None:
    assert acceptable_password("p" * length) is acceptable
