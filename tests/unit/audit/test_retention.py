"""Retention on a real database: only sealed events in whole checkpoint batches go, behind a
signed anchor that ``verify_trail`` starts from and states; a kept event changed or deleted, or
the anchor forged, is still named. Application logs and alerts go by age. With
ECHO_TEST_DATABASE_URL the same tests run on PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, func, select, text

from echo_identity.audit import chain, retention
from echo_identity.audit.alert_models import Alert, AlertDelivery
from echo_identity.audit.chain import ProblemKind
from echo_identity.audit.events import EventType
from echo_identity.audit.keys import AuditSigner
from echo_identity.audit.log_models import ApplicationLog
from echo_identity.audit.models import AuditChainAnchor, AuditCheckpoint, AuditEvent
from echo_identity.audit.retention import PruneResult, RetentionPolicy, prune_expired
from echo_identity.audit.sealer import seal_events, verify_trail
from echo_identity.config import ConfigError, Settings
from echo_identity.db import Database, utcnow
from echo_identity.keys.kek_providers import keyring_factory
from echo_identity.worker import build_worker, run_pass
from tests.factories import insert_audit_events
from tests.support.clock import MovableClock
from tests.support.environment import settings_for

EVENTS = cast(Table, AuditEvent.__table__)
NOW = utcnow()
OLD = NOW - timedelta(days=500)
YOUNG = NOW - timedelta(days=10)
KEEP_400_DAYS = RetentionPolicy(timedelta(days=400), None, None)


@pytest.fixture
def signer(settings: Settings) -> AuditSigner:
    return AuditSigner(keyring_factory(settings))


def add_events(database: Database, start: datetime, count: int) -> list[int]:
    """``count`` unsealed events recorded a second apart from ``start``; their ids."""
    return insert_audit_events(database, start, count)


def sealed(
    database: Database, signer: AuditSigner, start: datetime, count: int, batch: int = 2000
) -> list[int]:
    """``count`` events from ``start``, sealed with a checkpoint every ``batch`` events."""
    ids = add_events(database, start, count)
    assert seal_events(database, signer, grace=0, batch_size=batch).sealed == count
    return ids


def kept_ids(database: Database) -> list[int]:
    with database.read_session() as session:
        return list(session.scalars(select(AuditEvent.id).order_by(AuditEvent.id)))


def checkpoint_seqs(database: Database) -> list[int]:
    with database.read_session() as session:
        return list(session.scalars(select(AuditCheckpoint.seq).order_by(AuditCheckpoint.seq)))


def anchors(database: Database) -> list[AuditChainAnchor]:
    with database.read_session() as session:
        return list(session.scalars(select(AuditChainAnchor)))


def execute(database: Database, sql: str, **params: Any) -> None:
    with database.transaction() as session:
        session.execute(text(sql), params)


def problem(database: Database) -> chain.Problem:
    found = verify_trail(database).report.problem
    assert found is not None, "verify_trail found the trail intact"
    return found


def prune(
    database: Database, signer: AuditSigner, now: datetime = NOW, **policy: Any
) -> PruneResult:
    return prune_expired(database, signer, dataclasses.replace(KEEP_400_DAYS, **policy), now)


def old_and_young(database: Database, signer: AuditSigner) -> tuple[list[int], list[int]]:
    """Ten old events (checkpoints at seq 4, 8, 10), then three young ones (seq 11-13)."""
    old = sealed(database, signer, OLD, 10, batch=4)
    return old, sealed(database, signer, YOUNG, 3)


def test_pruning_deletes_old_sealed_batches_and_verify_states_the_anchor(
    database: Database, signer: AuditSigner
) -> None:
    old, young = old_and_young(database, signer)

    result = prune(database, signer)

    assert (result.audit_events, result.counts()) == (10, {"audit_events": 10})
    assert kept_ids(database) == young
    anchor = result.anchor
    assert anchor is not None
    assert (anchor.first_kept_seq, anchor.first_kept_id, anchor.pruned_count) == (11, young[0], 10)
    assert (anchor.pruned_from, anchor.pruned_through) == (OLD, OLD + timedelta(seconds=9))
    assert anchor.created_at == NOW
    assert checkpoint_seqs(database) == [10, 13]  # the one at the anchor stays, with the head
    status = verify_trail(database)
    assert status.report.problem is None
    assert status.report.anchor == anchor
    assert (status.report.sealed, status.report.head_seq) == (3, 13)
    assert len(old) == 10


def test_only_whole_checkpoint_batches_older_than_the_retention_go(
    database: Database, signer: AuditSigner
) -> None:
    sealed(database, signer, OLD, 4)  # seq 1-4, checkpoint at 4
    mixed = add_events(database, OLD + timedelta(hours=1), 2) + add_events(database, YOUNG, 2)
    seal_events(database, signer, grace=0)  # seq 5-8 in one batch: old and young together

    result = prune(database, signer)

    assert result.audit_events == 4
    assert kept_ids(database) == mixed  # the old events sealed with young ones wait
    assert verify_trail(database).report.problem is None


def test_the_newest_batch_stays_until_a_later_event_is_sealed(
    database: Database, signer: AuditSigner
) -> None:
    """The chain always starts at a real event the anchor names: an idle trail keeps its last
    batch even when all of it is old."""
    ids = sealed(database, signer, OLD, 6, batch=3)

    assert prune(database, signer).audit_events == 3
    assert kept_ids(database) == ids[3:]
    assert prune(database, signer).audit_events == 0
    sealed(database, signer, YOUNG, 1)
    assert prune(database, signer).audit_events == 3
    assert verify_trail(database).report.problem is None


def test_unsealed_events_are_never_pruned(database: Database, signer: AuditSigner) -> None:
    unsealed_only = add_events(database, OLD, 3)
    assert prune(database, signer).audit_events == 0
    assert kept_ids(database) == unsealed_only

    execute(database, "DELETE FROM audit_events")
    _, young = old_and_young(database, signer)
    late = add_events(database, OLD, 2)  # old, but not sealed (yet)
    assert prune(database, signer).audit_events == 10
    assert kept_ids(database) == young + late


def test_a_retention_of_zero_keeps_everything(
    app_env: dict[str, str], database: Database, signer: AuditSigner
) -> None:
    settings = settings_for(
        {
            **app_env,
            "ECHO_AUDIT_RETENTION_DAYS": "0",
            "ECHO_APP_LOG_RETENTION_DAYS": "0",
            "ECHO_ALERT_RETENTION_DAYS": "0",
        }
    )
    policy = RetentionPolicy.from_settings(settings)
    assert policy == RetentionPolicy(None, None, None)
    old, young = old_and_young(database, signer)
    add_logs(database, OLD, 3)
    add_alert(database, OLD)

    result = prune_expired(database, signer, policy, NOW + timedelta(days=10_000))

    assert result == PruneResult()
    assert kept_ids(database) == old + young
    assert anchors(database) == []
    assert (count(database, ApplicationLog), count(database, Alert)) == (3, 1)


def test_the_default_retentions_and_their_validation(app_env: dict[str, str]) -> None:
    policy = RetentionPolicy.from_settings(settings_for(app_env))
    assert policy == RetentionPolicy(timedelta(days=400), timedelta(days=30), timedelta(days=400))
    for name in (
        "ECHO_AUDIT_RETENTION_DAYS",
        "ECHO_APP_LOG_RETENTION_DAYS",
        "ECHO_ALERT_RETENTION_DAYS",
    ):
        for bad in ("-1", "ten", "1.5"):
            with pytest.raises(ConfigError, match=f"{name} is invalid"):
                settings_for({**app_env, name: bad})


def test_more_events_than_one_batch_are_pruned_in_several(
    database: Database, signer: AuditSigner
) -> None:
    sealed(database, signer, OLD, 25, batch=10)
    young = sealed(database, signer, YOUNG, 2)

    result = prune(database, signer, batch_size=7)

    assert result.audit_events == 25
    assert kept_ids(database) == young
    assert verify_trail(database).report.problem is None


def test_pruning_twice_moves_the_anchor_and_adds_up(
    database: Database, signer: AuditSigner
) -> None:
    sealed(database, signer, OLD, 5)  # seq 1-5
    sealed(database, signer, NOW - timedelta(days=390), 4)  # seq 6-9: old in 20 days
    young = sealed(database, signer, YOUNG, 2)  # seq 10-11

    first = prune(database, signer)
    second = prune(database, signer, now=NOW + timedelta(days=20))

    assert (first.audit_events, second.audit_events) == (5, 4)
    assert first.anchor is not None
    assert second.anchor is not None
    assert (first.anchor.first_kept_seq, first.anchor.pruned_count) == (6, 5)
    assert (second.anchor.first_kept_seq, second.anchor.pruned_count) == (10, 9)
    assert second.anchor.pruned_from == OLD
    assert second.anchor.pruned_through == NOW - timedelta(days=390) + timedelta(seconds=3)
    assert second.anchor.first_kept_id == young[0]
    assert len(anchors(database)) == 1  # the newest anchor replaces the one before
    status = verify_trail(database)
    assert status.report.problem is None
    assert status.report.anchor == second.anchor


def test_a_kept_event_modified_after_pruning_is_named(
    database: Database, signer: AuditSigner
) -> None:
    _, young = old_and_young(database, signer)
    prune(database, signer)
    execute(database, "UPDATE audit_events SET outcome = 'failure' WHERE id = :id", id=young[1])

    found = problem(database)
    assert (found.kind, found.event_id) == (ProblemKind.MODIFIED, young[1])


@pytest.mark.parametrize("position", [0, 1])
def test_a_kept_event_deleted_after_pruning_is_named(
    database: Database, signer: AuditSigner, position: int
) -> None:
    _, young = old_and_young(database, signer)
    prune(database, signer)
    execute(database, "DELETE FROM audit_events WHERE id = :id", id=young[position])

    found = problem(database)
    assert (found.kind, found.seq) == (ProblemKind.DELETED, 11 + position)


@pytest.mark.parametrize(
    "forgery",
    [
        "UPDATE audit_chain_anchors SET pruned_count = pruned_count + 1",
        "UPDATE audit_chain_anchors SET previous_hash = :fake",
        "UPDATE audit_chain_anchors SET signature = :fake",
        "UPDATE audit_chain_anchors SET key_id = 'another-key'",
        "UPDATE audit_chain_anchors SET first_kept_seq = first_kept_seq + 1",
    ],
)
def test_a_forged_anchor_is_named(database: Database, signer: AuditSigner, forgery: str) -> None:
    old_and_young(database, signer)
    prune(database, signer)
    execute(database, forgery, fake="ab" * 32)

    found = problem(database)
    assert found.kind == ProblemKind.ANCHOR
    assert "retention anchor" in found.message


def test_a_deleted_anchor_leaves_the_pruned_events_reported_deleted(
    database: Database, signer: AuditSigner
) -> None:
    old_and_young(database, signer)
    prune(database, signer)
    execute(database, "DELETE FROM audit_chain_anchors")

    found = problem(database)
    assert (found.kind, found.seq) == (ProblemKind.DELETED, 1)


def test_a_damaged_segment_is_not_pruned(database: Database, signer: AuditSigner) -> None:
    """Pruning never launders tampering: the evidence stays for ``audit verify``."""
    old, _ = old_and_young(database, signer)
    execute(database, "UPDATE audit_events SET ip = '203.0.113.66' WHERE id = :id", id=old[5])

    result = prune(database, signer)

    assert (result.audit_events, result.anchor) == (0, None)
    assert anchors(database) == []
    assert old[5] in kept_ids(database)
    found = problem(database)
    assert (found.kind, found.event_id) == (ProblemKind.MODIFIED, old[5])


def test_a_prune_stopped_after_its_anchor_is_finished_by_the_next(
    database: Database, signer: AuditSigner
) -> None:
    """Crash after the anchor's transaction: verify already starts at the anchor (it vouches
    for the events before it still there), and the next pass deletes them."""
    old, young = old_and_young(database, signer)
    anchor = retention._anchor_old_events(database, signer, NOW - timedelta(days=400), NOW)
    assert anchor is not None
    assert kept_ids(database) == old + young
    status = verify_trail(database)
    assert (status.report.problem, status.report.anchor, status.report.sealed) == (None, anchor, 3)

    result = prune(database, signer)

    assert (result.audit_events, result.anchor) == (10, None)
    assert kept_ids(database) == young
    assert verify_trail(database).report.anchor == anchor


def add_logs(database: Database, start: datetime, count: int) -> None:
    with database.transaction() as session:
        for index in range(count):
            session.add(
                ApplicationLog(
                    received_at=start + timedelta(seconds=index),
                    source="billing",
                    level="info",
                    message=f"line {index}",
                    fields={},
                )
            )


def add_alert(database: Database, created: datetime, last_seen: datetime | None = None) -> int:
    with database.transaction() as session:
        alert = Alert(
            created_at=created,
            last_seen_at=last_seen or created,
            rule="login_failures",
            severity="high",
            key="k",
            summary="s",
            evidence=[],
        )
        session.add(alert)
        session.flush()
        session.add(AlertDelivery(alert_id=alert.id, channel="webhook", status="delivered"))
        return alert.id


def count(database: Database, model: type[Any]) -> int:
    with database.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_application_logs_and_alerts_go_by_age_in_batches(
    database: Database, signer: AuditSigner
) -> None:
    add_logs(database, NOW - timedelta(days=31), 12)
    add_logs(database, NOW - timedelta(days=29), 2)
    gone = add_alert(database, NOW - timedelta(days=401))
    seen_again = add_alert(database, NOW - timedelta(days=401), NOW - timedelta(days=1))
    young = add_alert(database, NOW - timedelta(days=3))
    policy = RetentionPolicy(None, timedelta(days=30), timedelta(days=400), batch_size=5)

    result = prune_expired(database, signer, policy, NOW)

    assert (result.application_logs, result.alerts, result.audit_events) == (12, 1, 0)
    assert result.counts() == {"application_logs": 12, "alerts": 1}
    assert count(database, ApplicationLog) == 2
    with database.read_session() as session:
        assert sorted(session.scalars(select(Alert.id))) == [seen_again, young]
        deliveries: Sequence[int] = list(session.scalars(select(AlertDelivery.alert_id)))
    assert gone not in deliveries
    assert sorted(deliveries) == [seen_again, young]


def test_the_worker_pass_prunes_after_sealing_and_reports_counts(
    settings: Settings, database: Database
) -> None:
    clock = MovableClock()
    jobs = dataclasses.replace(build_worker(settings, database), seal_grace=0.0, clock=clock.now)
    assert jobs.pruning == RetentionPolicy.from_settings(settings)
    add_events(database, clock.now() - timedelta(minutes=1), 3)
    assert run_pass(jobs).sealed == 3
    clock.advance(401 * 86_400)
    add_events(database, clock.now() - timedelta(minutes=1), 1)

    result = run_pass(jobs)  # seals the new event, after which the first batch can go

    assert (result.sealed, result.pruned) == (1, {"audit_events": 3})
    status = verify_trail(database)
    assert status.report.problem is None
    assert status.report.anchor is not None
    assert status.report.anchor.pruned_count == 3


def test_the_worker_records_what_it_pruned_and_the_trail_still_verifies(
    settings: Settings, database: Database
) -> None:
    # real time throughout: the prune event is recorded (and sealed) like any other
    jobs = dataclasses.replace(build_worker(settings, database), seal_grace=0.0)
    add_events(database, utcnow() - timedelta(days=500), 3)
    assert run_pass(jobs).sealed == 3
    add_events(database, utcnow() - timedelta(minutes=1), 1)
    assert run_pass(jobs).pruned == {"audit_events": 3}
    run_pass(jobs)  # seals the prune event

    status = verify_trail(database)
    assert status.report.problem is None
    assert status.report.anchor is not None
    with database.session() as session:
        [recorded] = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == str(EventType.RETENTION_PRUNED))
        )
    assert (recorded.actor, recorded.details["audit_events"]) == ("worker", 3)
    assert recorded.details["first_kept_id"] == status.report.anchor.first_kept_id
