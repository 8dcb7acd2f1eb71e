"""Retention end to end: ``echo-identity worker --once`` prunes the old sealed events behind a
signed anchor, then ``echo-identity audit verify`` passes and states the anchor, and still
fails, named, when a kept event is changed or deleted or the anchor is forged."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Table, select, text

from echo_identity.audit.models import AuditChainAnchor, AuditEvent
from echo_identity.db import Database, utcnow
from tests.factories import insert_audit_events
from tests.support.environment import app_environment
from tests.support.secret_scan import echo_shaped
from tests.support.server import run_cli

EVENTS = cast(Table, AuditEvent.__table__)
OLD = utcnow() - timedelta(days=500)


@pytest.fixture
def env(tmp_path: Path, database: Database, database_url: str) -> dict[str, str]:
    """An app on the migrated test database: sealing without grace, default retention."""
    return app_environment(tmp_path / "var", database_url, ECHO_AUDIT_SEAL_GRACE="0")


def add_events(database: Database, count: int, *, old: bool) -> list[int]:
    return insert_audit_events(database, OLD if old else utcnow() - timedelta(minutes=5), count)


def worker_pass(env: dict[str, str]) -> None:
    result = run_cli(env, "worker", "--once", "--json")
    assert result.returncode == 0, result.stdout + result.stderr


def verify(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = run_cli(env, "audit", "verify", "--json")
    return result.returncode, json.loads(result.stdout)


def execute(database: Database, sql: str, **params: Any) -> None:
    with database.transaction() as session:
        session.execute(text(sql), params)


def pruned_trail(env: dict[str, str], database: Database) -> list[int]:
    """Six old events sealed in one pass, four young ones in the next, which prunes the six;
    the kept ids."""
    add_events(database, 6, old=True)
    worker_pass(env)  # seals the old batch; nothing after it yet, so it stays
    young = add_events(database, 4, old=False)
    worker_pass(env)  # seals the young batch, then prunes the old one behind an anchor
    with database.read_session() as session:
        kept = list(session.execute(select(AuditEvent.id, AuditEvent.event_type)))
    # the young batch, then the worker's record of what it pruned (not sealed yet)
    expected = [(id_, "vault.token.read") for id_ in young]
    assert sorted(kept) == [*expected, (young[-1] + 1, "audit.retention.pruned")]
    return young


def test_verify_after_pruning_passes_and_states_the_anchor(
    env: dict[str, str], database: Database
) -> None:
    young = pruned_trail(env, database)

    human = run_cli(env, "audit", "verify")
    assert human.returncode == 0, human.stdout + human.stderr
    lines = human.stdout.strip().splitlines()
    assert lines[0] == (
        "audit trail intact: 4 sealed events, 1 not yet sealed, 2 signed checkpoints (head seq 10)"
    )
    assert lines[1].startswith(
        f"starts at the signed retention anchor: first kept event {young[0]} (seq 7); "
        f"6 earlier events recorded {OLD.isoformat()} to "
    )
    code, report = verify(env)
    assert (code, report["intact"], report["sealed"]) == (0, True, 4)
    anchor = report["anchor"]
    assert (anchor["first_kept_event_id"], anchor["first_kept_seq"]) == (young[0], 7)
    assert anchor["pruned_count"] == 6
    assert anchor["pruned_from"] == OLD.isoformat()
    assert anchor["pruned_through"] == (OLD + timedelta(seconds=5)).isoformat()
    with database.read_session() as session:
        stored = session.scalars(select(AuditChainAnchor)).one()
    assert anchor["previous_hash"] == stored.previous_hash
    assert anchor["pruned_at"] == stored.created_at.isoformat()
    output = human.stdout + human.stderr + json.dumps(report)
    assert stored.signature not in output
    for name in ("ECHO_SECRET_KEY", "ECHO_VAULT_KEK"):
        assert env[name] not in output
    assert echo_shaped(output) == []


def test_an_unpruned_trail_states_no_anchor(env: dict[str, str], database: Database) -> None:
    add_events(database, 3, old=False)
    worker_pass(env)

    code, report = verify(env)
    assert (code, report["anchor"]) == (0, None)
    assert len(run_cli(env, "audit", "verify").stdout.strip().splitlines()) == 1


def test_a_kept_event_modified_after_pruning_fails_named(
    env: dict[str, str], database: Database
) -> None:
    young = pruned_trail(env, database)
    execute(database, "UPDATE audit_events SET client_id = 'x' WHERE id = :id", id=young[2])

    result = run_cli(env, "audit", "verify")
    assert result.returncode == 1
    assert f"event {young[2]} (seq 9) was modified" in result.stdout
    code, report = verify(env)
    assert (code, report["problem"], report["event_id"]) == (1, "modified", young[2])
    assert report["anchor"]["first_kept_seq"] == 7  # the anchor it checked from, stated too


def test_the_first_kept_event_deleted_after_pruning_fails_named(
    env: dict[str, str], database: Database
) -> None:
    young = pruned_trail(env, database)
    execute(database, "DELETE FROM audit_events WHERE id = :id", id=young[0])

    code, report = verify(env)
    assert (code, report["problem"], report["seq"]) == (1, "deleted", 7)


@pytest.mark.parametrize(
    "forgery",
    [
        "UPDATE audit_chain_anchors SET pruned_count = 5",
        "UPDATE audit_chain_anchors SET pruned_from = pruned_through",
        "UPDATE audit_chain_anchors SET previous_hash = :fake",
        "UPDATE audit_chain_anchors SET signature = :fake",
    ],
)
def test_a_forged_anchor_fails_named(env: dict[str, str], database: Database, forgery: str) -> None:
    pruned_trail(env, database)
    execute(database, forgery, fake="cd" * 32)

    result = run_cli(env, "audit", "verify")
    assert result.returncode == 1
    assert "the retention anchor at seq 7 does not verify" in result.stdout
    code, report = verify(env)
    assert (code, report["problem"], report["seq"]) == (1, "anchor", 7)


def test_verify_refuses_arguments_it_does_not_take(env: dict[str, str]) -> None:
    assert run_cli(env, "audit", "verify", "--json", "--json").returncode == 0  # a flag, twice
    assert run_cli(env, "audit", "verify", "extra").returncode == 2
    assert run_cli(env, "audit", "verify", "--anchor", "x").returncode == 2
