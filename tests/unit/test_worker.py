"""The worker pass composes the domains' jobs in order and seals last."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from sqlalchemy import select

from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent
from echo_identity.config import Settings
from echo_identity.db import Database, utcnow
from echo_identity.idp.models import RevokedAccessToken
from echo_identity.worker import WorkerJobs, build_worker, run_pass


def _jobs(settings: Settings, database: Database, now: datetime) -> WorkerJobs:
    jobs = build_worker(settings, database)
    return dataclasses.replace(jobs, seal_grace=0.0, clock=lambda: now)


def test_a_pass_seals_the_events_its_own_jobs_recorded(
    settings: Settings, database: Database
) -> None:
    now = utcnow() + timedelta(minutes=1)
    with database.transaction() as session:  # long expired: the provider's clean-up purges it
        session.add(RevokedAccessToken(jti="gone", expires_at=now - timedelta(days=1)))

    result = run_pass(_jobs(settings, database, now))

    assert result.purged == {str(EventType.ACCESS_TOKENS_PURGED): 1}
    assert result.sealed == 1
    with database.session() as session:
        purged = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == str(EventType.ACCESS_TOKENS_PURGED))
        ).one()
        assert purged.chain_seq is not None  # sealed in the same pass: sealing runs last


def test_an_idle_pass_does_nothing(settings: Settings, database: Database) -> None:
    result = run_pass(_jobs(settings, database, utcnow()))

    assert (result.refreshed, result.failed, result.expired, result.sealed) == (0, 0, 0, 0)
    assert result.purged == {}


def test_settings_become_objects_once_when_the_worker_is_built(
    settings: Settings, database: Database
) -> None:
    jobs = build_worker(settings, database)

    assert jobs.interval == settings.worker_interval
    assert jobs.refusal_window == settings.audit_refusal_window
    assert jobs.retention.access_token_ttl == timedelta(seconds=settings.access_token_ttl)
    assert jobs.database is database
