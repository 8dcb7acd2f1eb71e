"""Retention: sealed audit events, application logs and alerts older than their retention are
pruned by the worker, in batches, without breaking the audit chain.

Audit events. Only **sealed** events go, and only whole checkpoint batches: the pruner picks
the newest checkpoint ``S`` such that every event up to ``S`` is older than
``ECHO_AUDIT_RETENTION_DAYS`` and at least one sealed event follows it. Then, in order:

1. it re-verifies the segment it is about to delete (from the current anchor, or genesis, up to
   ``S``, against the signed checkpoint at ``S``), so pruning never launders tampering: a
   damaged segment is kept, logged (``audit_prune_refused``) and ``audit verify`` names it;
2. in one transaction, holding the chain lock (:func:`sealer.lock_chain`), it writes a signed
   :class:`~echo_identity.audit.models.AuditChainAnchor` (:func:`chain.sign_anchor`, the audit
   signer's key): the first kept event (``S + 1``) and the hash it links to, the number of
   events pruned so far in total and their time range; it replaces the previous anchor and
   drops the checkpoints before ``S`` (the one at ``S`` stays: it vouches for the anchor's hash);
3. it deletes the events before the anchor, ``batch_size`` rows per transaction. A pruner
   stopped half-way leaves events before the anchor behind; ``audit verify`` skips them (the
   anchor vouches for them) and the next pass deletes them.

``audit verify`` then starts at the anchor (:func:`chain.verify_chain`). The newest events older
than the retention may wait for the next checkpoint (a pass or so) before they go; on an idle
system the last batch stays until a newer event is sealed, so the chain always starts at a real
event the anchor names. The pseudonym map is not pruned here (erasure owns it).

Application logs go by ``received_at`` (walked in id order) and alerts by ``last_seen_at``
(alerts have no acknowledged state: an alert seen again stays), both in batches; an alert's
deliveries go with it (``ON DELETE CASCADE``). A retention of 0 days keeps that kind forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Select, Table, delete, func, select
from sqlalchemy.orm import Session

from echo_identity.audit import chain, keys, sealer
from echo_identity.audit.alert_models import Alert
from echo_identity.audit.keys import AuditSigner
from echo_identity.audit.log_models import ApplicationLog
from echo_identity.audit.models import AuditChainAnchor, AuditCheckpoint, AuditEvent
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.logs import get_logger

log = get_logger("echo_identity.audit.retention")
BATCH_SIZE = 1000
EVENTS = cast(Table, AuditEvent.__table__)


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of record is kept (``None``: forever) and how many rows one
    transaction deletes."""

    audit_events: timedelta | None
    application_logs: timedelta | None
    alerts: timedelta | None
    batch_size: int = BATCH_SIZE

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        """The policy of ``ECHO_AUDIT_RETENTION_DAYS``, ``ECHO_APP_LOG_RETENTION_DAYS`` and
        ``ECHO_ALERT_RETENTION_DAYS`` (0 = keep forever)."""
        return cls(
            audit_events=_days(settings.audit_retention_days),
            application_logs=_days(settings.app_log_retention_days),
            alerts=_days(settings.alert_retention_days),
        )


def _days(days: int) -> timedelta | None:
    return timedelta(days=days) if days > 0 else None


@dataclass(frozen=True)
class PruneResult:
    """Rows deleted by one :func:`prune_expired`, and the anchor it wrote (if it moved it)."""

    audit_events: int = 0
    application_logs: int = 0
    alerts: int = 0
    anchor: chain.Anchor | None = field(default=None)

    def counts(self) -> dict[str, int]:
        """The non-zero counts by kind (``audit_events``, ``application_logs``, ``alerts``)."""
        found = {
            "audit_events": self.audit_events,
            "application_logs": self.application_logs,
            "alerts": self.alerts,
        }
        return {kind: count for kind, count in found.items() if count}


def prune_expired(
    database: Database, signer: AuditSigner, policy: RetentionPolicy, now: datetime
) -> PruneResult:
    """Prune what is older than ``policy`` at ``now`` (see the module docstring), committing
    each batch here; logs ``retention_pruned`` with the counts. Raises database errors and what
    :meth:`AuditSigner.key` raises (the audit key cannot be loaded); rows of a failed batch
    stay."""
    anchor = None
    events = logs = alerts = 0
    # Logs and alerts first: they need no key, so a missing audit key does not keep them.
    if policy.application_logs is not None:
        logs = _delete_oldest_logs(database, now - policy.application_logs, policy.batch_size)
    if policy.alerts is not None:
        cutoff = now - policy.alerts
        alerts = _delete_in_batches(
            database,
            select(Alert.id).where(Alert.created_at < cutoff, Alert.last_seen_at < cutoff),
            Alert,
            policy.batch_size,
        )
    if policy.audit_events is not None:
        anchor = _anchor_old_events(database, signer, now - policy.audit_events, now)
        events = _delete_before_anchor(database, policy.batch_size)
    result = PruneResult(events, logs, alerts, anchor)
    if result.counts() or anchor is not None:
        log.info(
            "retention_pruned",
            **result.counts(),
            first_kept_seq=anchor.first_kept_seq if anchor else None,
            pruned_total=anchor.pruned_count if anchor else None,
        )
    return result


def _anchor_old_events(
    database: Database, signer: AuditSigner, cutoff: datetime, now: datetime
) -> chain.Anchor | None:
    """Move the chain's anchor past the checkpoint batches older than ``cutoff``; the new
    anchor, or ``None`` when there is nothing to move past (or the segment is damaged)."""
    with database.read_session() as session:
        current = sealer.load_anchor(session)
        start = current.first_kept_seq if current is not None else 1
        boundary = _boundary(session, start, cutoff)
        if boundary is None:
            return None
        report = _verify_segment(session, current, start, boundary)
        if report.problem is not None:
            log.error(
                "audit_prune_refused",
                problem=str(report.problem.kind),
                event_id=report.problem.event_id,
                seq=report.problem.seq,
                message=report.problem.message,
            )
            return None
        first_kept_id = session.scalar(
            select(EVENTS.c.id).where(EVENTS.c.chain_seq == boundary + 1)
        )
        oldest, newest = session.execute(
            select(func.min(EVENTS.c.occurred_at), func.max(EVENTS.c.occurred_at)).where(
                EVENTS.c.chain_seq >= start, EVENTS.c.chain_seq <= boundary
            )
        ).one()
    if first_kept_id is None or oldest is None:
        return None  # the chain changed under us (another pruner): next pass
    with database.transaction() as session:
        sealer.lock_chain(session)
        latest = sealer.load_anchor(session)
        if (latest.first_kept_seq if latest is not None else 1) != start:
            return None  # another pruner moved the anchor meanwhile
        key = signer.key(session)
        anchor = chain.sign_anchor(
            key.private_key,
            chain.Anchor(
                first_kept_seq=boundary + 1,
                first_kept_id=int(first_kept_id),
                previous_hash=report.head_hash,
                pruned_count=boundary,
                pruned_from=current.pruned_from if current is not None else oldest,
                pruned_through=max(newest, current.pruned_through) if current else newest,
                created_at=now,
                key_id=key.kid,
            ),
        )
        session.execute(delete(AuditChainAnchor))
        session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq < boundary))
        session.add(
            AuditChainAnchor(
                first_kept_seq=anchor.first_kept_seq,
                first_kept_event_id=anchor.first_kept_id,
                previous_hash=anchor.previous_hash,
                pruned_count=anchor.pruned_count,
                pruned_from=anchor.pruned_from,
                pruned_through=anchor.pruned_through,
                created_at=anchor.created_at,
                key_id=anchor.key_id,
                signature=anchor.signature,
            )
        )
    # The anchor in the application log too, like every checkpoint: a copy outside the database.
    log.info(
        "audit_anchor",
        first_kept_seq=anchor.first_kept_seq,
        first_kept_id=anchor.first_kept_id,
        previous_hash=anchor.previous_hash,
        pruned_count=anchor.pruned_count,
        key_id=anchor.key_id,
    )
    return anchor


def _boundary(session: Session, start: int, cutoff: datetime) -> int | None:
    """The newest checkpoint at or after ``start`` with every event up to it older than
    ``cutoff`` and a sealed event after it, or ``None``."""
    first_young = session.scalar(
        select(func.min(EVENTS.c.chain_seq)).where(
            EVENTS.c.chain_seq.is_not(None), EVENTS.c.occurred_at >= cutoff
        )
    )
    limit = first_young
    if limit is None:
        limit = session.scalar(select(func.max(EVENTS.c.chain_seq)))
    if limit is None:
        return None
    boundary: int | None = session.scalar(
        select(func.max(AuditCheckpoint.seq)).where(
            AuditCheckpoint.seq >= start, AuditCheckpoint.seq < limit
        )
    )
    return boundary


def _verify_segment(
    session: Session, current: chain.Anchor | None, start: int, boundary: int
) -> chain.ChainReport:
    """The chain from ``current`` (or genesis) through ``boundary``, checked against the signed
    checkpoints up to there."""
    rows = sealer.sealed_rows(session, start, boundary)
    try:
        return chain.verify_chain(
            sealer.sealed_events(rows),
            sealer.load_checkpoints(session, through_seq=boundary),
            keys.public_keys(session),
            anchor=current,
        )
    finally:
        rows.close()


def _delete_before_anchor(database: Database, batch_size: int) -> int:
    """Delete the sealed events before the newest anchor, ``batch_size`` per transaction."""
    with database.read_session() as session:
        anchor = sealer.load_anchor(session)
    if anchor is None:
        return 0
    doomed = (
        select(EVENTS.c.id)
        .where(EVENTS.c.chain_seq.is_not(None), EVENTS.c.chain_seq < anchor.first_kept_seq)
        .order_by(EVENTS.c.chain_seq)
    )
    return _delete_in_batches(database, doomed, AuditEvent, batch_size)


def _delete_oldest_logs(database: Database, cutoff: datetime, batch_size: int) -> int:
    """Delete the application logs received before ``cutoff``, oldest id first, ``batch_size``
    per transaction. Ids follow ``received_at`` (both set at insert), so the walk goes by the
    primary key and stops at the first younger row: no scan of the table, which has no index
    on ``received_at`` alone. A row a concurrent insert left behind a younger one goes a pass
    later."""
    deleted = 0
    while True:
        with database.transaction() as session:
            rows = session.execute(
                select(ApplicationLog.id, ApplicationLog.received_at)
                .order_by(ApplicationLog.id)
                .limit(batch_size)
            ).all()
            old = [row.id for row in rows if row.received_at < cutoff]
            if old:
                session.execute(delete(ApplicationLog).where(ApplicationLog.id.in_(old)))
        deleted += len(old)
        if len(old) < batch_size:
            return deleted


def _delete_in_batches(
    database: Database,
    ids: Select[int],
    model: type[AuditEvent | Alert],
    batch_size: int,
) -> int:
    """Delete the rows of ``model`` whose ids ``ids`` selects, ``batch_size`` per transaction;
    how many were deleted."""
    deleted = 0
    while True:
        with database.transaction() as session:
            batch = list(session.scalars(ids.limit(batch_size)))
            if batch:
                session.execute(delete(model).where(model.id.in_(batch)))
        deleted += len(batch)
        if len(batch) < batch_size:
            return deleted
