"""``echo-identity audit verify`` against a real, sealed database: intact trails pass, and
every modified, deleted or inserted row (and a forged checkpoint) fails, named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, insert, select, text

from echo_identity.audit import chain
from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.keys import AuditSigner
from echo_identity.audit.models import AuditEvent, AuditPseudonym
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.sealer import CHAINED_COLUMNS, seal_events
from echo_identity.audit.service import AuditTrail
from echo_identity.db import Database, utcnow
from echo_identity.keys.kek_providers import keyring_factory
from echo_identity.web.context import RequestContext
from tests.factories import create_user
from tests.support.environment import app_environment, settings_for
from tests.support.server import run_cli

EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
CONTEXT = RequestContext("198.51.100.4", "probe/2.0", "req-chain")
TRAIL = AuditTrail(Pseudonyms.from_secret(b"chain-verify-secret-key-32-bytes"))


@pytest.fixture
def env(tmp_path: Path, database: Database, database_url: str) -> dict[str, str]:
    """ECHO_* variables of an app on the migrated test database; sealing without grace."""
    return app_environment(tmp_path / "var", database_url, ECHO_AUDIT_SEAL_GRACE="0")


def record_events(database: Database, count: int, user: str = "user-sub-1") -> None:
    with database.transaction() as session:
        for index in range(count):
            TRAIL.record(
                session,
                EventType.LOGIN_SUCCESS if index % 2 else EventType.TOKEN_ISSUED,
                context=CONTEXT,
                user=user,
                client_id="client-a",
                token=f"token-{index}",
                details={"n": index},
            )


def seal(env: dict[str, str], database: Database) -> int:
    """One seal pass, in process (the worker CLI does the same; see the flow test)."""
    signer = AuditSigner(keyring_factory(settings_for(env)))
    return seal_events(database, signer, grace=0).sealed


def verify(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = run_cli(env, "audit", "verify", "--json")
    return result.returncode, json.loads(result.stdout)


def sealed_ids(database: Database) -> list[int]:
    with database.read_session() as session:
        return list(
            session.scalars(
                select(AuditEvent.id)
                .where(AuditEvent.chain_seq.is_not(None))
                .order_by(AuditEvent.chain_seq)
            )
        )


def execute(database: Database, sql: str, **params: Any) -> None:
    with database.transaction() as session:
        session.execute(text(sql), params)


def test_intact_trail_verifies_with_counts_of_sealed_and_unsealed_events(
    env: dict[str, str], database: Database
) -> None:
    record_events(database, 5)
    passed = run_cli(env, "worker", "--once", "--json")
    assert passed.returncode == 0, passed.stderr
    assert json.loads(passed.stdout)["sealed"] == 5
    assert json.loads(passed.stdout)["pruned"] == {}  # nothing is past its retention yet
    assert "Warning" not in passed.stderr
    record_events(database, 2)  # recorded after the pass: not sealed yet, and not a problem

    human = run_cli(env, "audit", "verify")
    assert human.returncode == 0, human.stdout + human.stderr
    assert "Warning" not in human.stderr  # e.g. a snapshot option SQLAlchemy ignored
    assert human.stdout.strip().splitlines() == [
        "audit trail intact: 5 sealed events, 2 not yet sealed, 1 signed checkpoints (head seq 5)"
    ]
    code, report = verify(env)
    assert code == 0
    assert (report["intact"], report["sealed"], report["unsealed"]) == (True, 5, 2)


def test_an_empty_trail_verifies(env: dict[str, str]) -> None:
    code, report = verify(env)
    assert code == 0
    assert report["sealed"] == 0


def test_a_modified_sealed_row_is_named_modified(env: dict[str, str], database: Database) -> None:
    record_events(database, 6)
    seal(env, database)
    target = sealed_ids(database)[2]
    execute(database, "UPDATE audit_events SET outcome = 'failure' WHERE id = :id", id=target)

    result = run_cli(env, "audit", "verify")
    assert result.returncode == 1
    assert f"event {target} (seq 3) was modified" in result.stdout
    assert "hint:" in result.stdout
    code, report = verify(env)
    assert code == 1
    assert (report["problem"], report["event_id"], report["seq"]) == ("modified", target, 3)


def test_a_modified_time_or_id_is_named_too(env: dict[str, str], database: Database) -> None:
    record_events(database, 3)
    seal(env, database)
    target = sealed_ids(database)[1]
    execute(database, "UPDATE audit_events SET ip = '10.0.0.1' WHERE id = :id", id=target)
    code, report = verify(env)
    assert (code, report["problem"], report["event_id"]) == (1, "modified", target)


def test_a_deleted_sealed_row_is_named_deleted(env: dict[str, str], database: Database) -> None:
    record_events(database, 6)
    seal(env, database)
    target = sealed_ids(database)[3]
    execute(database, "DELETE FROM audit_events WHERE id = :id", id=target)

    code, report = verify(env)
    assert code == 1
    assert (report["problem"], report["event_id"], report["seq"]) == ("deleted", target, 4)
    assert f"event {target} at seq 4" in report["message"]


def test_deleting_the_newest_sealed_rows_is_named_deleted(
    env: dict[str, str], database: Database
) -> None:
    record_events(database, 4)
    seal(env, database)
    ids = sealed_ids(database)
    execute(database, "DELETE FROM audit_events WHERE id >= :id", id=ids[2])
    code, report = verify(env)
    assert (code, report["problem"], report["seq"]) == (1, "deleted", 3)
    assert f"after event {ids[1]}" in report["message"]


def _insert_raw(database: Database, **fields: Any) -> int:
    """A row written behind the app's back (no record(), no sealer); returns its id."""
    values = {
        "occurred_at": utcnow(),
        "event_type": str(EventType.LOGIN_SUCCESS),
        "outcome": "success",
        "severity": str(Severity.INFO),
        "subject": "u_" + "0" * 32,
        "client_id": "client-a",
        "details": {},
        **fields,
    }
    with database.transaction() as session:
        inserted = session.execute(insert(EVENTS).values(**values).returning(EVENTS.c.id))
        return int(inserted.scalar_one())


def test_an_unsealed_row_inserted_in_the_middle_is_named_inserted(
    env: dict[str, str], database: Database
) -> None:
    record_events(database, 5)
    seal(env, database)
    with database.read_session() as session:
        middle = session.scalar(select(AuditEvent.occurred_at).where(AuditEvent.chain_seq == 3))
    forged = _insert_raw(database, occurred_at=middle)

    code, report = verify(env)
    assert code == 1
    assert (report["problem"], report["event_id"]) == ("inserted", forged)


@pytest.mark.parametrize("valid_hash", [True, False], ids=["recomputed-hash", "garbage-hash"])
def test_a_row_inserted_in_the_middle_with_a_forged_seal_is_named_inserted(
    env: dict[str, str], database: Database, valid_hash: bool
) -> None:
    record_events(database, 6)
    seal(env, database)
    forged = _insert_raw(database)
    # Make room at seq 3, as an attacker must (seq is unique), then seal the row there.
    execute(
        database, "UPDATE audit_events SET chain_seq = chain_seq + 1000000 WHERE chain_seq >= 3"
    )
    execute(
        database,
        "UPDATE audit_events SET chain_seq = chain_seq - 999999 WHERE chain_seq >= 1000000",
    )
    with database.read_session() as session:
        previous = session.scalar(select(AuditEvent.chain_hash).where(AuditEvent.chain_seq == 2))
        row = session.execute(select(*CHAINED_COLUMNS).where(EVENTS.c.id == forged)).one()
    assert previous is not None
    stored = chain.link(previous, dict(row._mapping)) if valid_hash else "ab" * 32
    execute(
        database,
        "UPDATE audit_events SET chain_seq = 3, chain_hash = :hash WHERE id = :id",
        hash=stored,
        id=forged,
    )

    code, report = verify(env)
    assert code == 1
    assert (report["problem"], report["event_id"], report["seq"]) == ("inserted", forged, 3)


def test_a_tampered_checkpoint_signature_fails_verification(
    env: dict[str, str], database: Database
) -> None:
    record_events(database, 3)
    seal(env, database)
    with database.read_session() as session:
        signature = session.scalar(text("SELECT signature FROM audit_checkpoints"))
    assert isinstance(signature, str)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    execute(database, "UPDATE audit_checkpoints SET signature = :s", s=flipped)

    code, report = verify(env)
    assert code == 1
    assert (report["problem"], report["seq"]) == ("checkpoint", 3)


def test_forgetting_a_user_deletes_the_map_row_and_the_chain_still_verifies(
    env: dict[str, str], database: Database
) -> None:
    # Real users: only a user's sub gets a map row.
    alice_sub, bob_sub = create_user(database).sub, create_user(database).sub
    record_events(database, 3, user=alice_sub)
    record_events(database, 2, user=bob_sub)
    seal(env, database)
    alice = TRAIL.pseudonyms.of(alice_sub)
    with database.transaction() as session:
        assert TRAIL.forget_user(session, alice_sub) == alice
    seal(env, database)

    code, report = verify(env)
    assert code == 0, report
    assert report["sealed"] == 6  # the privacy.pseudonym.forgotten event is sealed too
    with database.read_session() as session:
        mapped = set(session.scalars(select(AuditPseudonym.user_sub)))
        subjects = list(session.scalars(select(AuditEvent.subject)))
    assert mapped == {bob_sub}
    assert subjects.count(alice) == 4  # her events remain, under a pseudonym nobody resolves
    assert alice_sub not in subjects
