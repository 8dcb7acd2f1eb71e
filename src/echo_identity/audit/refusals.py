"""Repeated identical refusals are recorded once per window, with a count.

An unauthenticated caller can be refused at line rate (a locked-out password guesser, a
scanner walking ``/api/v1`` without a token). Recording every refusal as its own audit event
would let it grow the database as fast as it can send. Instead, refusals that share an event
type, a client address, a reason and a client id form one *window*
(``ECHO_AUDIT_REFUSAL_WINDOW`` seconds):

- the first refusal of a window is recorded as a normal audit event (``details.aggregated``
  names the window length), so detection and the trail see it at once;
- the others only count up one row of ``audit_refusal_windows`` (one row per key, however
  many requests);
- when the window is over, its count is recorded as one more event of the same type, address
  and client (``details.repeated``: how many refusals the first event stood for beyond itself),
  either by the next refusal with the same key or by the worker (:func:`close_refusal_windows`).
  Detection rules weigh such an event as ``1 + repeated`` refusals.

So N identical refusals cost O(1) rows per window, and the trail still says how many there
were. Every step is one atomic statement (an upsert that returns the new count, a ``DELETE ...
RETURNING`` that closes a window), so concurrent refusals, on several processes or PostgreSQL
connections, record exactly one first event per window and one summary per closed window,
never an ``IntegrityError``.

What goes into the key must be bounded by something the caller cannot choose freely: the
``reason`` is a stable error code and ``client_id`` a registered client (pass ``None`` for an
unknown one, or every invented client id opens a window of its own).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import RowMapping, Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.models import RefusalWindow
from echo_identity.audit.service import AuditTrail
from echo_identity.db import Database, utcnow
from echo_identity.web.context import NO_REQUEST, RequestContext

_TABLE = cast(Table, RefusalWindow.__table__)
_DIALECTS = {"sqlite": sqlite, "postgresql": postgresql}


def refusal_key(event_type: EventType, ip: str | None, reason: str, client_id: str | None) -> str:
    """The window key: a digest, so no caller-controlled text is stored in the key column."""
    material = "\x00".join((str(event_type), ip or "", reason, client_id or ""))
    return hashlib.sha256(material.encode("utf-8", "replace")).hexdigest()


def record_refusal(
    session: Session,
    event_type: EventType,
    *,
    reason: str,
    window_seconds: int,
    context: RequestContext = NO_REQUEST,
    severity: Severity = Severity.INFO,
    client_id: str | None = None,
    user: str | None = None,
    token: str | None = None,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
    audit: AuditTrail,
) -> bool:
    """Count one refusal (on ``session``; the caller commits); True when it was recorded as an
    audit event (the first of its window), False when it was only counted.

    ``reason`` is the stable error code; ``user`` is the ``sub`` of the person concerned, if
    any (a value that is no user's gets no pseudonym map row, see ``audit.pseudonyms``). A
    previous window of the same key that is over is summarised first. ``audit`` records the
    events. Raises what :meth:`AuditTrail.record` raises.
    """
    now = now or utcnow()
    key = refusal_key(event_type, context.ip, reason, client_id)
    cutoff = now - timedelta(seconds=window_seconds)
    over = (
        session.execute(
            delete(_TABLE)
            .where(_TABLE.c.key == key, _TABLE.c.window_started_at <= cutoff)
            .returning(*_TABLE.c)
        )
        .mappings()
        .first()
    )
    if over is not None:
        _summarise(session, audit, over)
    insert = _DIALECTS[session.get_bind().dialect.name].insert(_TABLE)
    count = session.execute(
        insert.values(
            key=key,
            event_type=str(event_type),
            ip=(context.ip or "")[:45] or None,
            client_id=(client_id or "")[:64] or None,
            window_started_at=now,
            last_seen_at=now,
            count=1,
        )
        .on_conflict_do_update(
            index_elements=["key"],
            set_={"count": _TABLE.c.count + 1, "last_seen_at": now},
        )
        .returning(_TABLE.c.count)
    ).scalar_one()
    if count > 1:  # the window's first refusal (ours or a concurrent one) is already an event
        return False
    audit.record(
        session,
        event_type,
        context=context,
        outcome="failure",
        severity=severity,
        client_id=client_id,
        user=user,
        token=token,
        details={
            **(details or {}),
            "error": reason,
            "aggregated": {"window": window_seconds, "key": key[:16]},
        },
    )
    return True


def _summarise(
    session: Session, audit: AuditTrail, window: RowMapping, actor: str | None = None
) -> None:
    """Record how many refusals a closed window counted beyond its first event (nothing when
    there were none): same type, address and client as the first, so rules group it alike."""
    if window["count"] <= 1:
        return
    audit.record(
        session,
        EventType(window["event_type"]),
        context=RequestContext(ip=window["ip"]),
        outcome="failure",
        severity=Severity.INFO,
        actor=actor,
        client_id=window["client_id"],
        details={
            "repeated": window["count"] - 1,
            "window_started_at": window["window_started_at"].isoformat(),
            "last_seen_at": window["last_seen_at"].isoformat(),
            "aggregated": {"key": window["key"][:16]},
        },
    )


def summarise_closed_windows(
    session: Session, audit: AuditTrail, *, window_seconds: int, now: datetime | None = None
) -> int:
    """Summarise and delete every window that is over (on ``session``; the caller commits).

    Returns how many windows were closed. A window with repeats becomes one event carrying
    ``details.repeated``; ``details.aggregated.key`` links it to the window's first event,
    which carries the reason.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=window_seconds)
    closed = (
        session.execute(
            delete(_TABLE).where(_TABLE.c.window_started_at <= cutoff).returning(*_TABLE.c)
        )
        .mappings()
        .all()
    )
    for window in sorted(closed, key=lambda w: (w["window_started_at"], w["key"])):
        _summarise(session, audit, window, actor="worker")
    return len(closed)


def close_refusal_windows(
    database: Database, audit: AuditTrail, *, window_seconds: int, now: datetime | None = None
) -> int:
    """The worker job: :func:`summarise_closed_windows` in one transaction of its own.

    Returns how many windows were closed; raises database errors (nothing is closed then).
    """
    with database.transaction() as session:
        return summarise_closed_windows(session, audit, window_seconds=window_seconds, now=now)
