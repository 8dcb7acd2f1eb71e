"""Pseudonyms: keyed, stable, unlinkable without the key; the map row is written once per
process and only after it committed is it skipped; only users get a map row."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select

from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent, AuditPseudonym
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail
from echo_identity.db import Database
from tests.factories import create_user

SUB = "8d4c2b6e-0b7e-4c43-9d55-3f1f0f7c6a11"  # no user's: only pseudonym arithmetic uses it


def test_pseudonym_is_a_stable_keyed_digest_that_does_not_contain_the_user_id() -> None:
    first, again = Pseudonyms.from_secret(b"k" * 32), Pseudonyms.from_secret(b"k" * 32)
    other_key = Pseudonyms.from_secret(b"o" * 32)
    pseudonym = first.of(SUB)
    assert pseudonym == again.of(SUB)
    assert pseudonym.startswith("u_")
    assert len(pseudonym) == 34
    assert SUB not in pseudonym
    assert pseudonym != other_key.of(SUB)
    assert pseudonym != first.of(SUB + "x")


@contextmanager
def counted_statements(database: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(database.engine, "before_cursor_execute", count)


def map_rows(database: Database) -> list[tuple[str, str]]:
    with database.read_session() as session:
        rows = session.execute(select(AuditPseudonym.pseudonym, AuditPseudonym.user_sub))
        return [(row[0], row[1]) for row in rows]


def map_statements(statements: list[str]) -> list[str]:
    return [s for s in statements if "audit_pseudonyms" in s]


@pytest.fixture
def sub(database: Database) -> str:
    """The sub of a real user."""
    return create_user(database).sub


def test_map_row_is_inserted_once_then_skipped_without_a_statement(
    database: Database, sub: str
) -> None:
    pseudonyms = Pseudonyms.from_secret(b"k" * 32)
    with database.transaction() as session:
        pseudonym = pseudonyms.mapped(session, sub)
        pseudonyms.mapped(session, sub)  # same transaction: still one insert
    assert map_rows(database) == [(pseudonym, sub)]
    with counted_statements(database) as statements, database.transaction() as session:
        assert pseudonyms.mapped(session, sub) == pseudonym
    assert not map_statements(statements)


def test_a_rolled_back_map_insert_is_retried(database: Database, sub: str) -> None:
    pseudonyms = Pseudonyms.from_secret(b"k" * 32)
    with database.session() as session:
        pseudonyms.mapped(session, sub)
        session.rollback()
    assert map_rows(database) == []
    with database.transaction() as session:
        pseudonym = pseudonyms.mapped(session, sub)
    assert map_rows(database) == [(pseudonym, sub)]


def test_another_process_mapping_the_same_user_is_harmless_and_then_remembered(
    database: Database, sub: str
) -> None:
    one, two = Pseudonyms.from_secret(b"k" * 32), Pseudonyms.from_secret(b"k" * 32)
    with database.transaction() as session:
        one.mapped(session, sub)
    with database.transaction() as session:
        two.mapped(session, sub)  # ON CONFLICT DO NOTHING
    assert len(map_rows(database)) == 1
    with counted_statements(database) as statements, database.transaction() as session:
        two.mapped(session, sub)
    assert not map_statements(statements)  # the row exists: the second process knows it now


def test_forget_deletes_the_map_row(database: Database, sub: str) -> None:
    someone_else = create_user(database).sub
    pseudonyms = Pseudonyms.from_secret(b"k" * 32)
    with database.transaction() as session:
        pseudonyms.mapped(session, sub)
        pseudonyms.mapped(session, someone_else)
    with database.transaction() as session:
        pseudonyms.forget(session, sub)
    assert [user_sub for _, user_sub in map_rows(database)] == [someone_else]


def test_a_sub_that_is_no_users_gets_no_map_row_and_is_not_remembered(
    database: Database,
) -> None:
    pseudonyms = Pseudonyms.from_secret(b"k" * 32)
    with database.transaction() as session:
        pseudonym = pseudonyms.mapped(session, SUB)
    assert pseudonym == pseudonyms.of(SUB)
    assert map_rows(database) == []
    with counted_statements(database) as statements, database.transaction() as session:
        pseudonyms.mapped(session, SUB)
    assert map_statements(statements)  # still unknown: asked again, not taken as mapped


def test_record_writes_no_map_row_for_hundreds_of_random_subjects(database: Database) -> None:
    # What an unauthenticated caller walking /api/v1/users/<random>/... passes down.
    trail = AuditTrail(Pseudonyms.from_secret(b"k" * 32))
    with database.transaction() as session:
        for index in range(300):
            trail.record(
                session, EventType.VAULT_TOKEN_DENIED, outcome="failure", user=f"rnd-{index}"
            )
    with database.read_session() as session:
        events = session.scalar(select(func.count()).select_from(AuditEvent))
    assert events == 300
    assert map_rows(database) == []


@pytest.mark.parametrize(
    "hostile", ["nul\x00byte", "lone-\ud800-surrogate", "x" * 10_000, "", "' OR 1=1 --"]
)
def test_hostile_subjects_are_pseudonymised_without_a_map_row_or_an_error(
    database: Database, hostile: str
) -> None:
    pseudonyms = Pseudonyms.from_secret(b"k" * 32)
    with database.transaction() as session:
        assert pseudonyms.mapped(session, hostile).startswith("u_")
    assert map_rows(database) == []


def test_a_user_added_earlier_in_the_same_transaction_is_mapped(database: Database) -> None:
    pseudonyms = Pseudonyms.from_secret(b"k" * 32)
    with database.transaction() as session:
        session.add(User(sub=SUB, username="fresh", email="fresh@example.org", password_hash="x"))
        pseudonym = pseudonyms.mapped(session, SUB)  # not flushed yet: mapped() must flush
    assert map_rows(database) == [(pseudonym, SUB)]
