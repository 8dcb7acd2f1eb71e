"""The export document is streamed: its head comes before any audit event is read, the
events come a page at a time by keyset (one query per page, ids ascending), only the
user's own, with their ``sub`` in place of the pseudonym; session ids only as fingerprints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from echo_identity.accounts.models import User
from echo_identity.accounts.sessions import SessionPolicy, SessionRecord, SqlSessionStore
from echo_identity.audit.events import EventType
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail
from echo_identity.crypto.digests import fingerprint
from echo_identity.db import Database, utcnow
from echo_identity.privacy.export import export_chunks, find_user
from tests.factories import TestUser, create_user

PSEUDONYMS = Pseudonyms.from_secret(b"e" * 32)
POLICY = SessionPolicy(idle=timedelta(hours=1), absolute=timedelta(hours=8))


@pytest.fixture
def people(database: Database) -> tuple[TestUser, TestUser]:
    """Two users; 7 events about the first and 2 about the second, interleaved."""
    first, second = create_user(database), create_user(database)
    trail = AuditTrail(PSEUDONYMS)
    with database.session() as session:
        for n in range(9):
            about = second if n in (2, 5) else first
            trail.record(session, EventType.LOGIN_SUCCESS, user=about.sub, details={"n": n})
        session.commit()
    return first, second


@pytest.fixture
def audit_queries(database: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM audit_events" in statement:
            seen.append(statement)

    event.listen(database.engine, "before_cursor_execute", count)
    yield seen
    event.remove(database.engine, "before_cursor_execute", count)


def test_events_are_streamed_a_keyset_page_at_a_time_after_the_head(
    database: Database, people: tuple[TestUser, TestUser], audit_queries: list[str]
) -> None:
    first, second = people
    store = SqlSessionStore(database, POLICY)
    now = utcnow()
    sid = "s" * 64
    store.put(SessionRecord(sid=sid, user_id=first.id, created_at=now, last_seen_at=now))
    with database.read_session() as session:
        user = session.scalar(select(User).where(User.id == first.id))
        assert user is not None
        chunks = export_chunks(
            session,
            user,
            pseudonym=PSEUDONYMS.of(first.sub),
            sessions=store,
            exported_at=now,
            page_size=3,
        )
        head = next(chunks)
        assert audit_queries == []  # the head went out before any event was read
        body = head + "".join(chunks)
    assert len(audit_queries) == 3  # pages of 3, 3 and 1
    document = json.loads(body)
    events = document["audit_events"]
    assert [e["details"]["n"] for e in events] == [0, 1, 3, 4, 6, 7, 8]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert {e["subject"] for e in events} == {first.sub}
    assert PSEUDONYMS.of(first.sub) not in body
    assert second.sub not in body
    assert [s["fingerprint"] for s in document["sessions"]] == [fingerprint(sid)]
    assert sid not in body


def test_an_exact_number_of_pages_ends_with_one_empty_page(
    database: Database, people: tuple[TestUser, TestUser], audit_queries: list[str]
) -> None:
    first, _ = people
    with database.read_session() as session:
        user = session.get(User, first.id)
        assert user is not None
        body = "".join(
            export_chunks(
                session,
                user,
                pseudonym=PSEUDONYMS.of(first.sub),
                sessions=SqlSessionStore(database, POLICY),
                exported_at=utcnow(),
                page_size=7,
            )
        )
    assert len(json.loads(body)["audit_events"]) == 7
    assert len(audit_queries) == 2


def test_a_user_is_found_by_sub_or_by_name_in_any_case(
    database: Database, people: tuple[TestUser, TestUser]
) -> None:
    first, _ = people
    with database.read_session() as session:
        for who in (first.sub, first.username, first.username.upper()):
            found = find_user(session, who)
            assert found is not None
            assert found.id == first.id
        assert find_user(session, "nobody") is None
        assert find_user(session, "x" * 10_000) is None
