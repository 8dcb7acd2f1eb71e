"""The sealer: links unsealed audit events into the hash chain and signs a checkpoint; and
:func:`verify_trail`, which reads the chain back for :func:`chain.verify_chain`.

Runs after appends, never on the request path: in every worker pass (``echo-identity worker``,
or the in-process worker thread in development) and from tests.

Order and late commits. Events are sealed in ``id`` order, but only once they are older than
``ECHO_AUDIT_SEAL_GRACE`` seconds: on PostgreSQL concurrent transactions can commit out of id
order, and the grace gives a transaction that recorded an event time to commit before the
events around it are sealed. An event that still commits later than that is not lost: the next
pass seals it after the current head (its ``seq`` is then higher than that of events with
larger ids) and logs ``audit_late_event_sealed``; the chain stays valid because the chain
order is ``seq``, not ``id``.

Each batch is one transaction that stores ``chain_seq``/``chain_hash`` on its events and a
signed checkpoint for the new head, so every sealed event is covered by a signature. Two
sealers never interleave: PostgreSQL takes a transaction-level advisory lock, SQLite's
``BEGIN IMMEDIATE`` already admits one writer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from echo_identity.audit import chain, keys
from echo_identity.audit.keys import AuditSigner
from echo_identity.audit.models import AuditCheckpoint, AuditEvent
from echo_identity.db import Database, utcnow
from echo_identity.logs import get_logger

log = get_logger("echo_identity.audit.sealer")
BATCH_SIZE = 2000
ADVISORY_LOCK_ID = 0x6563686F_61756474  # "echoaudt": one sealer at a time on PostgreSQL
EVENTS = cast(Table, AuditEvent.__table__)
CHAINED_COLUMNS = [EVENTS.c[name] for name in chain.CHAINED_FIELDS]
_SEAL = (
    update(EVENTS)
    .where(EVENTS.c.id == bindparam("event_id"), EVENTS.c.chain_seq.is_(None))
    .values(chain_seq=bindparam("seq"), chain_hash=bindparam("hash"))
)


@dataclass(frozen=True)
class SealResult:
    sealed: int
    head_seq: int
    checkpoints: int


def seal_events(
    database: Database,
    signer: AuditSigner,
    *,
    grace: float = 2.0,
    batch_size: int = BATCH_SIZE,
    clock: Callable[[], datetime] = utcnow,
) -> SealResult:
    """Seal every unsealed event recorded at least ``grace`` seconds ago; one checkpoint per
    batch. Returns what was sealed; raises database errors (nothing of a failed batch is kept)."""
    cutoff = clock() - timedelta(seconds=grace)
    sealed = checkpoints = 0
    head_seq = 0
    while True:
        with database.transaction() as session:
            count, head_seq = _seal_batch(session, signer, cutoff, batch_size, clock)
        if count == 0:
            break
        sealed += count
        checkpoints += 1
        if count < batch_size:
            break
    if sealed:
        log.info("audit_sealed", sealed=sealed, head_seq=head_seq, checkpoints=checkpoints)
    return SealResult(sealed, head_seq, checkpoints)


def _seal_batch(
    session: Session,
    signer: AuditSigner,
    cutoff: datetime,
    batch_size: int,
    clock: Callable[[], datetime],
) -> tuple[int, int]:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})
    head = session.execute(
        select(EVENTS.c.chain_seq, EVENTS.c.chain_hash)
        .where(EVENTS.c.chain_seq.is_not(None))
        .order_by(EVENTS.c.chain_seq.desc())
        .limit(1)
    ).first()
    head_seq, head_hash = (int(head[0]), str(head[1])) if head else (0, chain.GENESIS)
    rows = session.execute(
        select(*CHAINED_COLUMNS)
        .where(EVENTS.c.chain_seq.is_(None), EVENTS.c.occurred_at <= cutoff)
        .order_by(EVENTS.c.id)
        .limit(batch_size)
    ).all()
    if not rows:
        return 0, head_seq
    previous_cutoff = session.scalar(select(func.max(AuditCheckpoint.sealed_through)))
    seals: list[dict[str, Any]] = []
    for row in rows:
        fields = dict(row._mapping)
        head_seq += 1
        head_hash = chain.link(head_hash, fields)
        seals.append({"event_id": fields["id"], "seq": head_seq, "hash": head_hash})
        if previous_cutoff is not None and fields["occurred_at"] <= previous_cutoff:
            log.warning("audit_late_event_sealed", event_id=fields["id"], seq=head_seq)
    session.connection().execute(_SEAL, seals)
    key = signer.key(session)
    checkpoint = chain.sign_checkpoint(
        key.private_key,
        chain.Checkpoint(head_seq, head_hash, cutoff, clock(), key.kid),
    )
    session.add(
        AuditCheckpoint(
            seq=checkpoint.seq,
            head_hash=checkpoint.head_hash,
            sealed_through=checkpoint.sealed_through,
            created_at=checkpoint.created_at,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
        )
    )
    # The checkpoint in the application log too: an anchor outside the database.
    log.info("audit_checkpoint", seq=head_seq, head_hash=head_hash, key_id=key.kid)
    return len(rows), head_seq


@dataclass(frozen=True)
class TrailStatus:
    """The result of :func:`verify_trail`: the chain report and how many events wait."""

    report: chain.ChainReport
    unsealed: int


def verify_trail(database: Database, *, fetch_size: int = 5000) -> TrailStatus:
    """Recompute the whole chain and every checkpoint from one consistent snapshot of the
    database (a deferred read on SQLite, REPEATABLE READ on PostgreSQL)."""
    with _snapshot_session(database) as session:
        checkpoints = [
            chain.Checkpoint(
                row.seq,
                row.head_hash,
                row.sealed_through,
                row.created_at,
                row.key_id,
                row.signature,
            )
            for row in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))
        ]
        last_cutoff = max((c.sealed_through for c in checkpoints), default=None)
        misplaced = None
        if last_cutoff is not None:
            first = session.execute(
                select(EVENTS.c.id, EVENTS.c.occurred_at)
                .where(EVENTS.c.chain_seq.is_(None), EVENTS.c.occurred_at <= last_cutoff)
                .order_by(EVENTS.c.id)
                .limit(1)
            ).first()
            misplaced = chain.UnsealedEvent(int(first[0]), first[1]) if first else None
        unsealed = session.scalar(
            select(func.count()).select_from(EVENTS).where(EVENTS.c.chain_seq.is_(None))
        )
        public_keys = keys.public_keys(session)
        rows = session.execute(
            select(EVENTS.c.chain_seq, EVENTS.c.chain_hash, *CHAINED_COLUMNS)
            .where(EVENTS.c.chain_seq.is_not(None))
            .order_by(EVENTS.c.chain_seq, EVENTS.c.id)
            .execution_options(yield_per=fetch_size)
        )
        events = (
            chain.SealedEvent(int(row.chain_seq), str(row.chain_hash), _chained(row._mapping))
            for row in rows
        )
        try:
            report = chain.verify_chain(
                events,
                checkpoints,
                public_keys,
                first_misplaced_unsealed=misplaced,
            )
        finally:
            rows.close()  # verification stops at the first damage: release the server cursor
    return TrailStatus(report, int(unsealed or 0))


def _snapshot_session(database: Database) -> Session:
    """A read-only session whose queries all see one snapshot of the database."""
    if database.dialect != "postgresql":
        return database.read_session()  # a deferred SQLite read transaction is one snapshot
    session = database.session()
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    return session


def _chained(mapping: Any) -> dict[str, Any]:
    return {name: mapping[name] for name in chain.CHAINED_FIELDS}
