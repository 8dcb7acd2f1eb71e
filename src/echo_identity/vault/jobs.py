"""The vault's worker jobs: refresh the connections about to expire, and drop access tokens
that expired and can never be refreshed. The application's worker pass calls them first, in
this order (``echo_identity.worker``).

Several workers can run at once: on PostgreSQL each job claims due rows with
``FOR UPDATE SKIP LOCKED``, so no two workers refresh the same connection; on SQLite there is
one writer at a time anyway. Each refresh then goes through the same locked path as the API
(:meth:`~echo_identity.vault.service.VaultService.refresh_connection`), and commits on its
own: one connection is one unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from echo_identity.audit.events import EventType
from echo_identity.audit.service import AuditTrail
from echo_identity.db import Database
from echo_identity.logs import get_logger
from echo_identity.vault.models import Connection
from echo_identity.vault.runtime import VaultRuntime

log = get_logger("echo_identity.vault.jobs")
BATCH_SIZE = 50


@dataclass(frozen=True)
class RefreshResult:
    """What :func:`refresh_due_connections` did: connections refreshed, and those that were
    due but not refreshed (the provider refused or failed, the row changed meanwhile, or the
    refresh crashed)."""

    refreshed: int
    failed: int


def claim_due(database: Database, now: datetime, limit: int = BATCH_SIZE) -> list[int]:
    """Ids of active connections due for refresh at ``now`` (with a refresh token), soonest
    first, that no other worker is holding right now."""
    with database.session() as session:
        statement = (
            select(Connection.id)
            .where(
                Connection.status == "active",
                Connection.refresh_due_at <= now,
                Connection.refresh_token_ciphertext.is_not(None),
            )
            .order_by(Connection.refresh_due_at)
            .limit(limit)
        )
        if database.dialect == "postgresql":
            statement = statement.with_for_update(skip_locked=True)
        ids = list(session.scalars(statement))
        session.commit()
    return ids


def refresh_due_connections(
    database: Database, vault: VaultRuntime, now: datetime, limit: int = BATCH_SIZE
) -> RefreshResult:
    """Refresh up to ``limit`` connections due at ``now``, each in its own session and
    transaction; provider failures are recorded by the service (``vault.token.refresh_failed``).

    Never raises for a single connection: a crash is logged, rolled back and counted as failed.
    """
    refreshed = failed = 0
    for connection_id in claim_due(database, now, limit):
        with database.session() as session:
            try:
                if vault.service(session).refresh_connection(connection_id):
                    refreshed += 1
                else:
                    failed += 1
            except Exception:  # one broken row must not stop the others
                log.exception("vault_refresh_crashed", connection_id=connection_id)
                session.rollback()
                failed += 1
    return RefreshResult(refreshed, failed)


def expire_dead_tokens(database: Database, audit: AuditTrail, now: datetime) -> int:
    """Delete the access tokens expired at ``now`` that can never be refreshed (no refresh
    token), mark their connections ``expired`` and record ``vault.token.expired`` for each; one
    transaction. Returns how many."""
    with database.transaction() as session:
        dead = list(
            session.execute(
                select(Connection.id, Connection.user_id).where(
                    Connection.expires_at <= now,
                    Connection.refresh_token_ciphertext.is_(None),
                    Connection.access_token_ciphertext.is_not(None),
                )
            )
        )
        if dead:
            session.execute(
                update(Connection)
                .where(Connection.id.in_([row.id for row in dead]))
                .values(access_token_ciphertext=None, status="expired", refresh_due_at=None)
            )
            for row in dead:
                audit.record(
                    session,
                    EventType.VAULT_TOKEN_EXPIRED,
                    actor="worker",
                    details={"connection_id": row.id},
                )
    return len(dead)
