"""Background maintenance: refresh vault tokens about to expire, drop what is dead, and seal
the audit events recorded since the last pass into the hash chain (``audit.sealer``).

Several workers can run at once: on PostgreSQL each pass claims due rows with
``FOR UPDATE SKIP LOCKED``, so no two workers refresh the same connection; on SQLite there is
one writer at a time anyway. Each refresh then goes through the same locked path as the API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select, update

from echo_identity.audit import pseudonyms
from echo_identity.audit.events import EventType
from echo_identity.audit.monitoring import monitoring_pass
from echo_identity.audit.refusals import close_refusal_windows
from echo_identity.audit.sealer import seal_events
from echo_identity.audit.service import record
from echo_identity.db import Database, utcnow
from echo_identity.idp.cleanup import purge_expired
from echo_identity.logs import get_logger
from echo_identity.vault.models import Connection
from echo_identity.vault.runtime import VaultRuntime

log = get_logger("echo_identity.vault.worker")
BATCH_SIZE = 50


@dataclass(frozen=True)
class PassResult:
    refreshed: int
    failed: int
    expired: int
    sealed: int = 0
    purged: dict[str, int] = field(default_factory=dict)


def claim_due(database: Database, limit: int = BATCH_SIZE) -> list[int]:
    """Ids of connections due for refresh that no other worker is holding right now."""
    with database.session() as session:
        statement = (
            select(Connection.id)
            .where(
                Connection.status == "active",
                Connection.refresh_due_at <= utcnow(),
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


def expire_dead_tokens(database: Database) -> int:
    """Delete access tokens that expired and can never be refreshed (no refresh token)."""
    now = utcnow()
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
                record(
                    session,
                    EventType.VAULT_TOKEN_EXPIRED,
                    actor="worker",
                    details={"connection_id": row.id},
                )
    return len(dead)


def run_pass(database: Database, runtime: VaultRuntime) -> PassResult:
    """One maintenance pass; never raises for a single connection's failure."""
    # Refreshes record users (as pseudonyms); the dev worker thread may run outside the app.
    pseudonyms.configure(runtime.settings.secret_key_bytes())
    refreshed = failed = 0
    for connection_id in claim_due(database):
        with database.session() as session:
            try:
                if runtime.service(session).refresh_connection(connection_id):
                    refreshed += 1
                else:
                    failed += 1
            except Exception:  # one broken row must not stop the worker
                log.exception("vault_refresh_crashed", connection_id=connection_id)
                session.rollback()
                failed += 1
    expired = expire_dead_tokens(database)
    purged = purge_provider_tables(database, runtime)
    monitoring_pass(database, runtime.settings)  # detection rules, then alert delivery
    if refreshed or failed or expired:
        log.info("vault_worker_pass", refreshed=refreshed, failed=failed, expired=expired)
    sealed = seal_audit_events(database, runtime)  # last: after the events this pass recorded
    return PassResult(refreshed, failed, expired, sealed, purged)


def purge_provider_tables(database: Database, runtime: VaultRuntime) -> dict[str, int]:
    """Delete expired codes, token families and access-token records (``idp/cleanup.py``),
    and close the refusal windows that are over (``audit/refusals.py``: their counts become
    events); a failure is logged and retried next pass. Returns the counts by audit event type."""
    try:
        purged = purge_expired(database, runtime.settings)
        with database.transaction() as session:
            close_refusal_windows(session, window_seconds=runtime.settings.audit_refusal_window)
        return purged
    except Exception:  # housekeeping must never stop the vault work
        log.exception("provider_cleanup_failed")
        return {}


def seal_audit_events(database: Database, runtime: VaultRuntime) -> int:
    """Seal the audit events recorded since the last pass; a sealing failure is logged and
    retried next pass, never stopping the vault work. Returns how many events were sealed."""
    try:
        return seal_events(
            database, runtime.audit_signer, grace=runtime.settings.audit_seal_grace
        ).sealed
    except Exception:  # e.g. the KEK wrapping the audit key is gone: say so, keep going
        log.exception("audit_seal_failed")
        return 0


def run_forever(
    database: Database,
    runtime: VaultRuntime,
    interval: float,
    stop: threading.Event | None = None,
    on_pass: Callable[[PassResult], None] | None = None,
) -> None:
    """Run passes every ``interval`` seconds until ``stop`` is set."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            result = run_pass(database, runtime)
            if on_pass is not None:
                on_pass(result)
        except Exception:  # the database may be briefly unreachable; try again next time
            log.exception("vault_worker_pass_failed")
        stop.wait(interval)


def start_in_background(
    database: Database, runtime: VaultRuntime, interval: float
) -> threading.Event:
    """Run the worker in a daemon thread (development ``serve``); set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_forever,
        args=(database, runtime, interval, stop),
        name="vault-worker",
        daemon=True,
    )
    thread.start()
    return stop
