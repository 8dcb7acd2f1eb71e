"""The one object every domain records audit events through (:class:`AuditTrail`), and the one
helper a view uses to record its event and commit before the response."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.models import AuditEvent
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.crypto.digests import fingerprint
from echo_identity.db import utcnow
from echo_identity.logs import get_logger, redact_value
from echo_identity.web.context import (
    NO_REQUEST,
    RequestContext,
    request_context,
    request_session,
    service,
)

log = get_logger("echo_identity.audit")
# One constant Core statement (cached once), executed with a parameter dict per event.
_INSERT = cast(Table, AuditEvent.__table__).insert()


class AuditTrail:
    """Where every domain records audit events: built once by the wiring point
    (``echo_identity.services``) with the pseudonyms keyed by ``ECHO_SECRET_KEY``, and handed
    to services in their constructors (request code: ``service(AuditTrail)``)."""

    def __init__(self, pseudonyms: Pseudonyms) -> None:
        self.pseudonyms = pseudonyms

    def record(
        self,
        session: Session,
        event_type: EventType,
        *,
        context: RequestContext = NO_REQUEST,
        outcome: str = "success",
        severity: Severity = Severity.INFO,
        actor: str | None = None,
        user: str | None = None,
        subject: str | None = None,
        client_id: str | None = None,
        token: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Add an audit event to ``session`` (the caller commits with its own unit of work).

        ``user`` is the ``sub`` of the person the event is about: it is stored as the subject
        in pseudonym form only (the first time this process sees it, its map row is inserted
        in the same transaction). ``actor`` and ``subject`` are for what is not a person
        (``"cli"``, ``"worker"``, a client id) and are stored as given: never put a user id in
        them. ``token`` is reduced to its fingerprint here; ``details`` pass the log
        redaction, so a secret handed in by mistake is masked before it is stored.

        Raises ``ValueError`` when both ``user`` and ``subject`` are given.
        """
        if user is not None:
            if subject is not None:
                raise ValueError("give either user (a person) or subject (a thing), not both")
            subject = self.pseudonyms.mapped(session, user)
        clean = {key: redact_value(key, value) for key, value in (details or {}).items()}
        token_fingerprint = fingerprint(token) if token else None
        # A Core INSERT on the caller's transaction: appends stay cheap on the token path (no
        # ORM unit-of-work bookkeeping for rows nobody reads back in the request).
        session.execute(
            _INSERT,
            {
                "occurred_at": utcnow(),
                "event_type": str(event_type),
                "outcome": outcome,
                "severity": str(severity),
                "actor": actor,
                "subject": subject,
                # bounded to their columns here too, whatever the caller checked
                "client_id": client_id[:64] if client_id else None,
                "ip": context.ip[:45] if context.ip else None,
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

    def forget_user(
        self, session: Session, sub: str, *, context: RequestContext = NO_REQUEST
    ) -> str:
        """Delete the pseudonym → user map row of ``sub`` and record
        ``privacy.pseudonym.forgotten`` (on ``session``; the caller commits). Returns the
        pseudonym. The chain is untouched and still verifies; the user's events remain,
        attributed to a pseudonym nobody can resolve."""
        pseudonym = self.pseudonyms.forget(session, sub)
        self.record(
            session,
            EventType.PSEUDONYM_FORGOTTEN,
            context=context,
            severity=Severity.WARNING,
            subject=pseudonym,
        )
        return pseudonym


def record_for_request(event_type: EventType, **fields: Any) -> None:
    """Record ``event_type`` with this request's context on the request's session and commit
    it, together with whatever the request's services flushed: the one way a view writes its
    audit event before the response (``fields`` as for :meth:`AuditTrail.record`)."""
    session = request_session()
    service(AuditTrail).record(session, event_type, context=request_context(), **fields)
    session.commit()
