"""The one function every domain records audit events through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.models import AuditEvent
from echo_identity.crypto.digests import fingerprint
from echo_identity.db import utcnow
from echo_identity.logs import get_logger, redact_value

log = get_logger("echo_identity.audit")
# One constant Core statement (cached once), executed with a parameter dict per event.
_INSERT = cast(Table, AuditEvent.__table__).insert()


@dataclass(frozen=True)
class RequestContext:
    """Who is on the other end of the request: captured by the web layer, passed down."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


NO_REQUEST = RequestContext()


def record(
    session: Session,
    event_type: EventType,
    *,
    context: RequestContext = NO_REQUEST,
    outcome: str = "success",
    severity: Severity = Severity.INFO,
    actor: str | None = None,
    subject: str | None = None,
    client_id: str | None = None,
    token: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add an audit event to ``session`` (the caller commits with its own unit of work).

    ``token`` is reduced to its fingerprint here; ``details`` pass the log redaction, so a
    secret handed in by mistake is masked before it is stored.
    """
    clean = {key: redact_value(key, value) for key, value in (details or {}).items()}
    token_fingerprint = fingerprint(token) if token else None
    # A Core INSERT on the caller's transaction: appends stay cheap on the token path (no ORM
    # unit-of-work bookkeeping for rows nobody reads back in the request).
    session.execute(
        _INSERT,
        {
            "occurred_at": utcnow(),
            "event_type": str(event_type),
            "outcome": outcome,
            "severity": str(severity),
            "actor": actor,
            "subject": subject,
            "client_id": client_id,
            "ip": context.ip,
            "user_agent": (context.user_agent or "")[:512] or None,
            "request_id": context.request_id,
            "token_fingerprint": token_fingerprint,
            "details": clean,
        },
    )
    log.info(
        "audit",
        audit_event=str(event_type),
        outcome=outcome,
        severity=str(severity),
        client_id=client_id,
        subject=subject,
        token_fingerprint=token_fingerprint,
    )
