"""The worker pass: each domain's jobs, in order, on the collaborators the wiring point built.

A pass reads top-down:

1. the vault refreshes the connections about to expire and drops dead access tokens
   (:mod:`echo_identity.vault.jobs`);
2. the provider purges the rows that can no longer change a decision
   (:mod:`echo_identity.idp.cleanup`), and the refusal windows that are over are closed
   (:mod:`echo_identity.audit.refusals`: their counts become events);
3. the detection rules run and alerts are delivered (:mod:`echo_identity.audit.monitoring`);
4. the audit events recorded since the previous pass, this pass's included, are sealed
   into the signed hash chain (:mod:`echo_identity.audit.sealer`);
5. last, what is older than its retention is pruned (:mod:`echo_identity.audit.retention`):
   after sealing, because only sealed events in whole checkpoint batches are pruned, behind a
   signed anchor, so this pass's seal can already let the oldest batch go.

Each job commits its own units of work. A failing housekeeping, monitoring or sealing step is
logged and retried next pass; it never stops the vault work. Settings become objects once,
when :class:`WorkerJobs` is built (:func:`build_worker`), not on every pass.

Several workers can run at once: the vault jobs claim rows with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, and sealing serialises on the chain head.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from echo_identity.audit.events import EventType
from echo_identity.audit.keys import AuditSigner
from echo_identity.audit.monitoring import Monitoring, monitoring_pass
from echo_identity.audit.refusals import close_refusal_windows
from echo_identity.audit.retention import RetentionPolicy, prune_expired
from echo_identity.audit.sealer import seal_events
from echo_identity.audit.service import AuditTrail
from echo_identity.clock import SYSTEM_CLOCK, Clock
from echo_identity.config import Settings
from echo_identity.db import Database, utcnow
from echo_identity.idp.cleanup import Retention, purge_expired
from echo_identity.logs import get_logger
from echo_identity.services import Services, build_services
from echo_identity.vault.jobs import expire_dead_tokens, refresh_due_connections
from echo_identity.vault.runtime import VaultRuntime

log = get_logger("echo_identity.worker")


@dataclass(frozen=True)
class WorkerJobs:
    """What every pass runs the jobs with; built once (:meth:`from_services`)."""

    database: Database
    audit: AuditTrail
    vault: VaultRuntime
    retention: Retention
    refusal_window: int  # seconds (``ECHO_AUDIT_REFUSAL_WINDOW``)
    monitoring: Monitoring
    signer: AuditSigner
    seal_grace: float  # seconds (``ECHO_AUDIT_SEAL_GRACE``)
    pruning: RetentionPolicy  # ``ECHO_AUDIT_RETENTION_DAYS`` and the other retentions
    interval: float  # seconds between passes (``ECHO_WORKER_INTERVAL``)
    clock: Callable[[], datetime] = utcnow

    @classmethod
    def from_services(cls, services: Services) -> WorkerJobs:
        """The jobs' collaborators out of ``services``, their settings turned into objects.

        Raises ``ValueError`` for garbled business hours (``load_settings`` refuses them)."""
        settings = services.settings
        return cls(
            database=services.database,
            audit=services.audit,
            vault=services.vault,
            retention=Retention.from_settings(settings),
            refusal_window=settings.audit_refusal_window,
            monitoring=Monitoring.from_settings(settings),
            signer=services.audit_signer,
            seal_grace=settings.audit_seal_grace,
            pruning=RetentionPolicy.from_settings(settings),
            interval=settings.worker_interval,
            clock=services.clock.now,
        )


def build_worker(
    settings: Settings, database: Database | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> WorkerJobs:
    """The worker's jobs for ``settings``, on ``database`` when given (the CLI checked it),
    reading time from ``clock``."""
    return WorkerJobs.from_services(build_services(settings, database, clock=clock))


@dataclass(frozen=True)
class PassResult:
    """What one pass did: vault connections refreshed, failed and expired, audit events
    sealed, and the provider rows purged by audit event type."""

    refreshed: int
    failed: int
    expired: int
    sealed: int = 0
    purged: dict[str, int] = field(default_factory=dict)
    # rows pruned by retention, by kind (audit_events, application_logs, alerts)
    pruned: dict[str, int] = field(default_factory=dict)


def run_pass(jobs: WorkerJobs) -> PassResult:
    """One pass (see the module docstring). Raises only what the vault jobs raise for the
    database as a whole (one connection's failure is counted, never raised)."""
    # Each job reads the clock when it starts: refreshes may take a while.
    refresh = refresh_due_connections(jobs.database, jobs.vault, jobs.clock())
    expired = expire_dead_tokens(jobs.database, jobs.audit, jobs.clock())
    purged = _clean_up(jobs)
    # detection rules, then alert delivery
    monitoring_pass(jobs.database, jobs.monitoring, jobs.clock())
    if refresh.refreshed or refresh.failed or expired:
        log.info(
            "vault_worker_pass",
            refreshed=refresh.refreshed,
            failed=refresh.failed,
            expired=expired,
        )
    sealed = _seal(jobs)  # after the events this pass recorded
    pruned = _prune(jobs)  # last: after sealing (see the module docstring)
    return PassResult(refresh.refreshed, refresh.failed, expired, sealed, purged, pruned)


def _clean_up(jobs: WorkerJobs) -> dict[str, int]:
    """Purge the provider's expired rows and close the refusal windows that are over; a
    failure is logged and retried next pass. Returns the purged counts by audit event type."""
    try:
        purged = purge_expired(jobs.database, jobs.audit, jobs.retention, jobs.clock())
        close_refusal_windows(
            jobs.database, jobs.audit, window_seconds=jobs.refusal_window, now=jobs.clock()
        )
        return purged
    except Exception:  # housekeeping must never stop the vault work
        log.exception("provider_cleanup_failed")
        return {}


def _seal(jobs: WorkerJobs) -> int:
    """Seal the audit events recorded since the last pass; a failure is logged and retried
    next pass. Returns how many events were sealed."""
    try:
        return seal_events(
            jobs.database, jobs.signer, grace=jobs.seal_grace, clock=jobs.clock
        ).sealed
    except Exception:  # e.g. the KEK wrapping the audit key is gone: say so, keep going
        log.exception("audit_seal_failed")
        return 0


def _prune(jobs: WorkerJobs) -> dict[str, int]:
    """Prune what is older than its retention; a failure is logged and retried next pass.
    Returns the pruned counts by kind (logged by the job itself)."""
    try:
        result = prune_expired(jobs.database, jobs.signer, jobs.pruning, jobs.clock())
        counts = result.counts()
        if counts:  # the trail says what left it (sealed with the next pass)
            details: dict[str, object] = dict(counts)
            if result.anchor is not None:
                details["first_kept_id"] = result.anchor.first_kept_id
                details["pruned_through"] = result.anchor.pruned_through.isoformat()
            jobs.audit.write(
                EventType.RETENTION_PRUNED,
                actor="worker",
                details=details,
                occurred_at=jobs.clock(),
            )
        return counts
    except Exception:  # e.g. the audit key cannot be loaded: say so, keep going
        log.exception("retention_prune_failed")
        return {}


def run_forever(
    jobs: WorkerJobs,
    stop: threading.Event | None = None,
    on_pass: Callable[[PassResult], None] | None = None,
) -> None:
    """Run a pass every ``jobs.interval`` seconds until ``stop`` is set; a failed pass is
    logged and the next one tries again."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            result = run_pass(jobs)
            if on_pass is not None:
                on_pass(result)
        except Exception:  # the database may be briefly unreachable; try again next time
            log.exception("vault_worker_pass_failed")
        stop.wait(jobs.interval)


def start_in_background(jobs: WorkerJobs) -> threading.Event:
    """Run the worker in a daemon thread (development ``serve``); set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_forever, args=(jobs, stop), name="vault-worker", daemon=True
    )
    thread.start()
    return stop
