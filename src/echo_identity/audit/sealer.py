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
``BEGIN IMMEDIATE`` already admits one writer. The pruner
(:mod:`echo_identity.audit.retention`) takes the same lock when it moves the chain's anchor.

Once old events are pruned, :func:`verify_trail` starts from the newest signed anchor
(:class:`~echo_identity.audit.models.AuditChainAnchor`) instead of the chain's genesis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Result, Row, Table, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from echo_identity.audit import chain, keys
from echo_identity.audit.keys import AuditSigner
from echo_identity.audit.models import AuditChainAnchor, AuditCheckpoint, AuditEvent
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


def lock_chain(session: Session) -> None:
    """Serialise with every other writer of the chain (sealer, pruner) until ``session``'s
    transaction ends: an advisory lock on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
    admits one writer."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})


def _seal_batch(
    session: Session,
    signer: AuditSigner,
    cutoff: datetime,
    batch_size: int,
    clock: Callable[[], datetime],
) -> tuple[int, int]:
    lock_chain(session)
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
    database (a deferred read on SQLite, REPEATABLE READ on PostgreSQL), starting at the
    newest retention anchor when events were pruned (events before it that a pruner stopped
    mid-way has not deleted yet are left out: the anchor already vouches for them)."""
    with _snapshot_session(database) as session:
        checkpoints = load_checkpoints(session)
        anchor = load_anchor(session)
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
        start = anchor.first_kept_seq if anchor is not None else 1
        rows = sealed_rows(session, start, fetch_size=fetch_size)
        try:
            report = chain.verify_chain(
                sealed_events(rows),
                checkpoints,
                public_keys,
                first_misplaced_unsealed=misplaced,
                anchor=anchor,
            )
        finally:
            rows.close()  # verification stops at the first damage: release the server cursor
    return TrailStatus(report, int(unsealed or 0))


def load_checkpoints(session: Session, *, through_seq: int | None = None) -> list[chain.Checkpoint]:
    """The stored checkpoints in ``seq`` order (up to ``through_seq`` when given)."""
    query = select(AuditCheckpoint).order_by(AuditCheckpoint.seq)
    if through_seq is not None:
        query = query.where(AuditCheckpoint.seq <= through_seq)
    return [
        chain.Checkpoint(
            row.seq, row.head_hash, row.sealed_through, row.created_at, row.key_id, row.signature
        )
        for row in session.scalars(query)
    ]


def load_anchor(session: Session) -> chain.Anchor | None:
    """The newest retention anchor (the highest ``first_kept_seq``), or ``None`` when nothing
    was ever pruned."""
    row = session.scalars(
        select(AuditChainAnchor).order_by(AuditChainAnchor.first_kept_seq.desc()).limit(1)
    ).first()
    if row is None:
        return None
    return chain.Anchor(
        first_kept_seq=row.first_kept_seq,
        first_kept_id=row.first_kept_event_id,
        previous_hash=row.previous_hash,
        pruned_count=row.pruned_count,
        pruned_from=row.pruned_from,
        pruned_through=row.pruned_through,
        created_at=row.created_at,
        key_id=row.key_id,
        signature=row.signature,
    )


def sealed_rows(
    session: Session, from_seq: int, through_seq: int | None = None, *, fetch_size: int = 5000
) -> Result[Any]:
    """A streamed result of the sealed events from ``from_seq`` (through ``through_seq``) in
    chain order, for :func:`sealed_events`; the caller closes it."""
    query = select(EVENTS.c.chain_seq, EVENTS.c.chain_hash, *CHAINED_COLUMNS).where(
        EVENTS.c.chain_seq.is_not(None), EVENTS.c.chain_seq >= from_seq
    )
    if through_seq is not None:
        query = query.where(EVENTS.c.chain_seq <= through_seq)
    return session.execute(
        query.order_by(EVENTS.c.chain_seq, EVENTS.c.id).execution_options(yield_per=fetch_size)
    )


def sealed_events(rows: Iterable[Row[Any]]) -> Iterator[chain.SealedEvent]:
    """The rows of :func:`sealed_rows` as :class:`chain.SealedEvent`."""
    for row in rows:
        yield chain.SealedEvent(int(row.chain_seq), str(row.chain_hash), _chained(row._mapping))


def _snapshot_session(database: Database) -> Session:
    """A read-only session whose queries all see one snapshot of the database."""
    if database.dialect != "postgresql":
        return database.read_session()  # a deferred SQLite read transaction is one snapshot
    session = database.session()
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    return session


def _chained(mapping: Any) -> dict[str, Any]:
    return {name: mapping[name] for name in chain.CHAINED_FIELDS}
