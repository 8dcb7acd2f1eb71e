"""Repeated identical refusals: one event per window plus a count, never a row per refusal;
exactly one first event and one summary per window even when refusals race."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from echo_identity.audit.alert_models import Alert
from echo_identity.audit.detection import DetectionPolicy, run_detection
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent, RefusalWindow
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.refusals import (
    close_refusal_windows,
    record_refusal,
    summarise_closed_windows,
)
from echo_identity.audit.rules import Rule
from echo_identity.audit.service import AuditTrail
from echo_identity.config import Settings
from echo_identity.db import Database, utcnow
from echo_identity.web.context import RequestContext

WINDOW = 60
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SCANNER = RequestContext(ip="203.0.113.66", user_agent="scanner/1.0", request_id="req-1")
TRAIL = AuditTrail(Pseudonyms(b"k" * 32))


def refuse(
    session: Session,
    at: datetime,
    *,
    context: RequestContext = SCANNER,
    reason: str = "missing_token",
    client_id: str | None = None,
    event_type: EventType = EventType.VAULT_TOKEN_DENIED,
) -> bool:
    return record_refusal(
        session,
        event_type,
        reason=reason,
        window_seconds=WINDOW,
        context=context,
        client_id=client_id,
        details={"api": "vault"},
        now=at,
        audit=TRAIL,
    )


def refuse_many(database: Database, count: int, start: datetime = T0, **kw: Any) -> list[bool]:
    with database.transaction() as session:
        return [refuse(session, start + timedelta(seconds=i * 0.1), **kw) for i in range(count)]


def events(database: Database) -> list[AuditEvent]:
    with database.read_session() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def windows(database: Database) -> list[RefusalWindow]:
    with database.read_session() as session:
        return list(session.scalars(select(RefusalWindow)))


def test_the_first_refusal_of_a_window_is_an_event_and_the_rest_only_count(
    database: Database,
) -> None:
    recorded = refuse_many(database, 50)
    assert recorded == [True] + [False] * 49
    [first] = events(database)
    assert first.event_type == str(EventType.VAULT_TOKEN_DENIED)
    assert (first.outcome, first.ip, first.request_id) == ("failure", SCANNER.ip, "req-1")
    assert first.details["error"] == "missing_token"
    assert first.details["api"] == "vault"
    assert first.details["aggregated"]["window"] == WINDOW
    [window] = windows(database)
    assert window.count == 50
    assert window.ip == SCANNER.ip


def test_refusals_that_differ_in_address_reason_or_client_get_windows_of_their_own(
    database: Database,
) -> None:
    with database.transaction() as session:
        assert refuse(session, T0)
        assert refuse(session, T0, context=RequestContext(ip="198.51.100.9"))
        assert refuse(session, T0, reason="invalid_token")
        assert refuse(session, T0, client_id="billing")
        assert refuse(session, T0, event_type=EventType.LOGIN_LOCKED)
        assert not refuse(session, T0 + timedelta(seconds=1))
    assert len(events(database)) == 5
    assert len(windows(database)) == 5


def test_the_next_refusal_after_a_window_summarises_it_and_opens_a_new_one(
    database: Database,
) -> None:
    refuse_many(database, 10, client_id="billing")
    with database.transaction() as session:
        assert refuse(session, T0 + timedelta(seconds=WINDOW + 1), client_id="billing")
    first, summary, new_first = events(database)
    assert summary.details["repeated"] == 9
    assert summary.details["aggregated"]["key"] == first.details["aggregated"]["key"]
    # grouped like the first event: same type, address and client
    assert (summary.event_type, summary.ip, summary.client_id) == (
        first.event_type,
        SCANNER.ip,
        "billing",
    )
    assert "repeated" not in new_first.details
    [window] = windows(database)
    assert window.count == 1


def test_a_window_without_repeats_closes_without_a_summary(database: Database) -> None:
    refuse_many(database, 1)
    assert close_refusal_windows(
        database, TRAIL, window_seconds=WINDOW, now=T0 + timedelta(hours=1)
    )
    assert len(events(database)) == 1
    assert windows(database) == []


def test_the_worker_summarises_and_deletes_closed_windows_and_leaves_open_ones(
    database: Database,
) -> None:
    refuse_many(database, 7, client_id="billing")
    later = T0 + timedelta(seconds=WINDOW * 2)
    refuse_many(database, 3, start=later, context=RequestContext(ip="198.51.100.9"))
    closed = close_refusal_windows(
        database, TRAIL, window_seconds=WINDOW, now=later + timedelta(seconds=1)
    )
    assert closed == 1
    summaries = [e for e in events(database) if "repeated" in e.details]
    [summary] = summaries
    assert summary.details["repeated"] == 6
    assert (summary.actor, summary.ip, summary.client_id) == ("worker", SCANNER.ip, "billing")
    [still_open] = windows(database)
    assert (still_open.ip, still_open.count) == ("198.51.100.9", 3)


def test_n_refusals_grow_the_database_by_a_constant_number_of_rows(database: Database) -> None:
    def rows() -> int:
        with database.read_session() as session:
            return sum(
                session.scalar(select(func.count()).select_from(model)) or 0
                for model in (AuditEvent, RefusalWindow)
            )

    growth = []
    for count in (20, 400):
        before = rows()
        refuse_many(database, count, start=T0 + timedelta(hours=len(growth)))
        growth.append(rows() - before)
    assert growth[0] == growth[1] <= 3  # a summary of the previous window, an event, a window


def test_detection_fires_on_an_aggregated_burst_of_vault_denials(
    database: Database, settings: Settings
) -> None:
    # 30 denials from one address and client are stored as 2 events; the rule needs 5.
    with database.transaction() as session:
        for _ in range(30):
            refuse(session, utcnow(), client_id="billing")
    close_refusal_windows(database, TRAIL, window_seconds=WINDOW, now=utcnow() + timedelta(hours=1))
    assert len(events(database)) == 2

    run_detection(
        database, DetectionPolicy.from_settings(settings), now=utcnow() + timedelta(seconds=5)
    )

    with database.read_session() as session:
        alerts = {(a.rule, a.key): a.summary for a in session.scalars(select(Alert))}
    assert (Rule.VAULT_DENIALS, "client:billing") in alerts
    assert (Rule.VAULT_DENIALS, f"ip:{SCANNER.ip}") in alerts
    assert alerts[(Rule.VAULT_DENIALS, "client:billing")].startswith("30 refused vault reads")


# --- Races (PostgreSQL: on SQLite the write lock, taken at BEGIN, rules them out) -----------


def _race(
    database: Database, first: Callable[[Session], bool], second: Callable[[Session], bool]
) -> list[bool]:
    """Run ``first`` in one transaction and, while it is still open, ``second`` in another;
    commit the first once the second is waiting on it (or done). Returns both results."""
    results: dict[str, bool] = {}
    errors: list[BaseException] = []
    pids: list[int] = []

    def run_second() -> None:
        try:
            with database.session() as other:
                pids.append(int(other.scalar(text("SELECT pg_backend_pid()")) or 0))
                results["second"] = second(other)
                other.commit()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with database.session() as session:
        results["first"] = first(session)
        thread = threading.Thread(target=run_second)
        thread.start()
        deadline = time.monotonic() + 10
        while thread.is_alive() and time.monotonic() < deadline:
            if pids and _waits_on_a_lock(database, pids[0]):
                break
            time.sleep(0.02)
        session.commit()
    thread.join(timeout=10)
    assert not errors, errors
    return [results["first"], results["second"]]


def _waits_on_a_lock(database: Database, pid: int) -> bool:
    with database.engine.connect() as probe:
        waiting = probe.scalar(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
    return waiting == "Lock"


@pytest.mark.postgres
def test_two_racing_first_refusals_record_one_event_without_an_integrity_error(
    database: Database,
) -> None:
    assert database.dialect == "postgresql", "set ECHO_TEST_DATABASE_URL (make test-postgres)"
    recorded = _race(
        database, lambda s: refuse(s, T0), lambda s: refuse(s, T0 + timedelta(seconds=1))
    )
    assert sorted(recorded) == [False, True]
    assert len(events(database)) == 1
    [window] = windows(database)
    assert window.count == 2


@pytest.mark.postgres
def test_two_racing_refusals_after_a_window_summarise_it_once(database: Database) -> None:
    assert database.dialect == "postgresql", "set ECHO_TEST_DATABASE_URL (make test-postgres)"
    refuse_many(database, 5)
    later = T0 + timedelta(seconds=WINDOW + 5)
    recorded = _race(database, lambda s: refuse(s, later), lambda s: refuse(s, later))
    assert sorted(recorded) == [False, True]
    summaries = [e for e in events(database) if "repeated" in e.details]
    assert [s.details["repeated"] for s in summaries] == [4]
    assert len(events(database)) == 3  # first, summary, the new window's first
    [window] = windows(database)
    assert window.count == 2


@pytest.mark.postgres
def test_a_refusal_racing_the_worker_is_neither_lost_nor_summarised_twice(
    database: Database,
) -> None:
    assert database.dialect == "postgresql", "set ECHO_TEST_DATABASE_URL (make test-postgres)"
    refuse_many(database, 5)
    later = T0 + timedelta(seconds=WINDOW + 5)

    def worker(session: Session) -> bool:
        return summarise_closed_windows(session, TRAIL, window_seconds=WINDOW, now=later) == 1

    assert _race(database, worker, lambda s: refuse(s, later)) == [True, True]
    summaries = [e for e in events(database) if "repeated" in e.details]
    assert [s.details["repeated"] for s in summaries] == [4]
    [window] = windows(database)
    assert window.count == 1  # the racing refusal opened the next window, as its first event
