"""Pseudonyms: keyed, stable, unlinkable without the key; the map row is written once per
process and only after it committed is it skipped."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select

from echo_identity.audit.models import AuditPseudonym
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.db import Database

SUB = "8d4c2b6e-0b7e-4c43-9d55-3f1f0f7c6a11"


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


def test_map_row_is_inserted_once_then_skipped_without_a_statement(database: Database) -> None:
    pseudonyms = Pseudonyms.from_secret(b"k" * 32)
    with database.transaction() as session:
        pseudonym = pseudonyms.mapped(session, SUB)
        pseudonyms.mapped(session, SUB)  # same transaction: still one insert
    assert map_rows(database) == [(pseudonym, SUB)]
    with counted_statements(database) as statements, database.transaction() as session:
        assert pseudonyms.mapped(session, SUB) == pseudonym
    assert not [s for s in statements if "audit_pseudonyms" in s]


def test_a_rolled_back_map_insert_is_retried(database: Database) -> None:
    pseudonyms = Pseudonyms.from_secret(b"k" * 32)
    with database.session() as session:
        pseudonyms.mapped(session, SUB)
        session.rollback()
    assert map_rows(database) == []
    with database.transaction() as session:
        pseudonym = pseudonyms.mapped(session, SUB)
    assert map_rows(database) == [(pseudonym, SUB)]


def test_another_process_mapping_the_same_user_is_harmless(database: Database) -> None:
    one, two = Pseudonyms.from_secret(b"k" * 32), Pseudonyms.from_secret(b"k" * 32)
    with database.transaction() as session:
        one.mapped(session, SUB)
    with database.transaction() as session:
        two.mapped(session, SUB)  # ON CONFLICT DO NOTHING
    assert len(map_rows(database)) == 1


def test_forget_deletes_the_map_row(database: Database) -> None:
    pseudonyms = Pseudonyms.from_secret(b"k" * 32)
    with database.transaction() as session:
        pseudonyms.mapped(session, SUB)
        pseudonyms.mapped(session, "someone-else")
    with database.transaction() as session:
        pseudonyms.forget(session, SUB)
    assert [sub for _, sub in map_rows(database)] == ["someone-else"]
