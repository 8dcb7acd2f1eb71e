"""The sealer links events into the hash chain in id order and signs a checkpoint per batch;
``verify_trail`` reads it back and names the first event changed, removed or inserted."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, insert, select, text

from echo_identity.audit import chain
from echo_identity.audit.chain import ProblemKind
from echo_identity.audit.events import EventType
from echo_identity.audit.keys import AuditSigner, public_keys
from echo_identity.audit.models import AuditCheckpoint, AuditEvent
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.sealer import CHAINED_COLUMNS, seal_events, verify_trail
from echo_identity.audit.service import AuditTrail
from echo_identity.config import Settings
from echo_identity.db import Database, utcnow
from echo_identity.keys.kek_providers import keyring_factory
from echo_identity.web.context import RequestContext

EVENTS = cast(Table, AuditEvent.__table__)
TRAIL = AuditTrail(Pseudonyms.from_secret(b"s" * 32))


@pytest.fixture
def signer(settings: Settings) -> AuditSigner:
    return AuditSigner(keyring_factory(settings))


def record(database: Database, count: int) -> None:
    with database.transaction() as session:
        for index in range(count):
            TRAIL.record(
                session,
                EventType.TOKEN_ISSUED,
                context=RequestContext("192.0.2.1", "probe/1.0", f"req-{index}"),
                client_id="client-a",
                details={"n": index},
            )


def chain_rows(database: Database) -> list[dict[str, Any]]:
    with database.read_session() as session:
        rows = session.execute(
            select(EVENTS.c.chain_seq, EVENTS.c.chain_hash, *CHAINED_COLUMNS).order_by(EVENTS.c.id)
        )
        return [dict(row._mapping) for row in rows]


def checkpoints(database: Database) -> list[AuditCheckpoint]:
    with database.read_session() as session:
        return list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq)))


def execute(database: Database, sql: str, **params: Any) -> None:
    with database.transaction() as session:
        session.execute(text(sql), params)


def problem(database: Database) -> chain.Problem:
    found = verify_trail(database).report.problem
    assert found is not None, "verify_trail found the trail intact"
    return found


def test_sealing_links_every_event_in_id_order_and_signs_the_head(
    database: Database, signer: AuditSigner
) -> None:
    record(database, 5)
    result = seal_events(database, signer, grace=0)

    assert (result.sealed, result.head_seq, result.checkpoints) == (5, 5, 1)
    rows = chain_rows(database)
    assert [row["chain_seq"] for row in rows] == [1, 2, 3, 4, 5]
    previous = chain.GENESIS
    for row in rows:
        fields = {name: row[name] for name in chain.CHAINED_FIELDS}
        assert row["chain_hash"] == chain.link(previous, fields)
        previous = row["chain_hash"]
    [checkpoint] = checkpoints(database)
    assert (checkpoint.seq, checkpoint.head_hash) == (5, previous)
    with database.read_session() as session:
        keys = public_keys(session)
    assert keys.keys() == {checkpoint.key_id}
    signed = chain.Checkpoint(
        checkpoint.seq,
        checkpoint.head_hash,
        checkpoint.sealed_through,
        checkpoint.created_at,
        checkpoint.key_id,
        checkpoint.signature,
    )
    assert chain.verify_checkpoints([signed], keys) is None
    forged = replace(signed, head_hash=chain.GENESIS)
    assert chain.verify_checkpoints([forged], keys) is not None


def test_events_recorded_after_a_seal_are_sealed_by_the_next_pass_after_the_head(
    database: Database, signer: AuditSigner
) -> None:
    record(database, 3)
    seal_events(database, signer, grace=0)
    record(database, 2)
    status = verify_trail(database)
    assert (status.report.problem, status.report.sealed, status.unsealed) == (None, 3, 2)

    result = seal_events(database, signer, grace=0)

    assert (result.sealed, result.head_seq) == (2, 5)
    assert [row["chain_seq"] for row in chain_rows(database)] == [1, 2, 3, 4, 5]
    assert [c.seq for c in checkpoints(database)] == [3, 5]
    status = verify_trail(database)
    assert (status.report.problem, status.report.sealed, status.unsealed) == (None, 5, 0)
    assert seal_events(database, signer, grace=0).sealed == 0  # nothing left: no checkpoint
    assert len(checkpoints(database)) == 2


def test_events_younger_than_the_grace_wait_for_a_later_pass(
    database: Database, signer: AuditSigner
) -> None:
    record(database, 2)
    now = utcnow()

    def at(moment: datetime) -> Any:
        return lambda: moment

    assert seal_events(database, signer, grace=60, clock=at(now)).sealed == 0
    assert checkpoints(database) == []
    assert (
        seal_events(database, signer, grace=60, clock=at(now + timedelta(seconds=61))).sealed == 2
    )


def test_a_large_backlog_is_sealed_in_batches_each_with_its_checkpoint(
    database: Database, signer: AuditSigner
) -> None:
    record(database, 5)
    result = seal_events(database, signer, grace=0, batch_size=2)
    assert (result.sealed, result.checkpoints) == (5, 3)
    assert [c.seq for c in checkpoints(database)] == [2, 4, 5]
    assert verify_trail(database).report.problem is None


def test_an_intact_trail_verifies_with_its_counts(database: Database, signer: AuditSigner) -> None:
    record(database, 4)
    seal_events(database, signer, grace=0)
    report = verify_trail(database).report
    assert (report.problem, report.sealed, report.checkpoints, report.head_seq) == (None, 4, 1, 4)


def test_a_changed_event_is_named_modified(database: Database, signer: AuditSigner) -> None:
    record(database, 4)
    seal_events(database, signer, grace=0)
    target = chain_rows(database)[1]["id"]
    execute(database, "UPDATE audit_events SET outcome = 'failure' WHERE id = :id", id=target)
    found = problem(database)
    assert (found.kind, found.event_id, found.seq) == (ProblemKind.MODIFIED, target, 2)


def test_a_removed_event_is_named_deleted(database: Database, signer: AuditSigner) -> None:
    record(database, 4)
    seal_events(database, signer, grace=0)
    target = chain_rows(database)[2]["id"]
    execute(database, "DELETE FROM audit_events WHERE id = :id", id=target)
    found = problem(database)
    assert (found.kind, found.event_id, found.seq) == (ProblemKind.DELETED, target, 3)


def test_an_event_inserted_behind_the_sealer_is_named_inserted(
    database: Database, signer: AuditSigner
) -> None:
    record(database, 3)
    seal_events(database, signer, grace=0)
    first = chain_rows(database)[0]
    with database.transaction() as session:
        forged = session.execute(
            insert(EVENTS)
            .values(
                occurred_at=first["occurred_at"],  # older than the last seal pass
                event_type=str(EventType.LOGIN_SUCCESS),
                outcome="success",
                severity="info",
                details={},
            )
            .returning(EVENTS.c.id)
        ).scalar_one()
    found = problem(database)
    assert (found.kind, found.event_id) == (ProblemKind.INSERTED, forged)


def test_a_forged_checkpoint_is_named(database: Database, signer: AuditSigner) -> None:
    record(database, 2)
    seal_events(database, signer, grace=0)
    execute(database, "UPDATE audit_checkpoints SET head_hash = :h", h=chain.GENESIS)
    assert problem(database).kind == ProblemKind.CHECKPOINT
