"""The one object every domain records audit events through (:class:`AuditTrail`), and the one
helper a view uses to record its event and commit before the response."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, TypedDict, Unpack

from sqlalchemy.orm import Session

from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.writer import INSERT, AuditWriter
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
# The event is in the database; the application log repeats it only for whoever asks for DEBUG.
_stdlib_log = logging.getLogger("echo_identity.audit")


class EventFields(TypedDict, total=False):
    """What an audit event says besides its type (see :meth:`AuditTrail.record`)."""

    context: RequestContext
    outcome: str
    severity: Severity
    actor: str | None
    user: str | None
    subject: str | None
    client_id: str | None
    token: str | None
    details: dict[str, Any] | None
    # when it happened, for a recorder that reads an injected clock (the worker); default now
    occurred_at: datetime


class AuditTrail:
    """Where every domain records audit events: built once by the wiring point
    (``echo_identity.services``) with the pseudonyms keyed by ``ECHO_SECRET_KEY`` and the
    process's group-commit :class:`~echo_identity.audit.writer.AuditWriter`, and handed to
    services in their constructors (request code: ``service(AuditTrail)``)."""

    def __init__(self, pseudonyms: Pseudonyms, writer: AuditWriter | None = None) -> None:
        self.pseudonyms = pseudonyms
        self.writer = writer

    def record(
        self, session: Session, event_type: EventType, **fields: Unpack[EventFields]
    ) -> None:
        """Add an audit event to ``session`` (the caller commits with its own unit of work):
        for an event that must be atomic with the state change it describes.

        ``user`` is the ``sub`` of the person the event is about: it is stored as the subject
        in pseudonym form only (the first time this process sees it, its map row is inserted
        in the same transaction). ``actor`` and ``subject`` are for what is not a person
        (``"cli"``, ``"worker"``, a client id) and are stored as given: never put a user id in
        them. ``token`` is reduced to its fingerprint here; ``details`` pass the log
        redaction, so a secret handed in by mistake is masked before it is stored.

        Raises ``ValueError`` when both ``user`` and ``subject`` are given.
        """
        user = _person(fields)
        subject = self.pseudonyms.mapped(session, user) if user is not None else None
        # A Core INSERT on the caller's transaction: appends stay cheap (no ORM unit-of-work
        # bookkeeping for rows nobody reads back in the request).
        session.execute(INSERT, _row(event_type, fields, subject))

    def write(self, event_type: EventType, **fields: Unpack[EventFields]) -> None:
        """Commit an audit event that goes with no other change, through the group-commit
        writer (fields as for :meth:`record`); returns once it is committed.

        Raises ``ValueError`` when both ``user`` and ``subject`` are given, and
        :class:`~echo_identity.audit.writer.AuditWriteError` when it could not be committed.
        """
        if self.writer is None:
            raise RuntimeError("this AuditTrail has no writer; record() on a session instead")
        user = _person(fields)
        subject = self.pseudonyms.of(user) if user is not None else None
        self.writer.write(_row(event_type, fields, subject), sub=user)

    def record_or_write(
        self, session: Session, event_type: EventType, **fields: Unpack[EventFields]
    ) -> bool:
        """:meth:`record` on ``session`` when it has a transaction open (the event joins the
        changes made in it; the caller commits), else :meth:`write` (group commit, done when
        this returns). Returns True when the event joined ``session``."""
        if session.in_transaction() or self.writer is None:
            self.record(session, event_type, **fields)
            return True
        self.write(event_type, **fields)
        return False

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


def _person(fields: EventFields) -> str | None:
    """The ``user`` of ``fields``; raises ``ValueError`` when a ``subject`` is given too."""
    user = fields.get("user")
    if user is not None and fields.get("subject") is not None:
        raise ValueError("give either user (a person) or subject (a thing), not both")
    return user


def _row(event_type: EventType, fields: EventFields, person: str | None) -> dict[str, Any]:
    """The ``audit_events`` row of one event (and its DEBUG line in the application log);
    ``person``: the pseudonym of ``fields["user"]``, if one was given."""
    subject = person if person is not None else fields.get("subject")
    context = fields.get("context", NO_REQUEST)
    outcome = fields.get("outcome", "success")
    severity = fields.get("severity", Severity.INFO)
    client_id = fields.get("client_id")
    token = fields.get("token")
    clean = {key: redact_value(key, value) for key, value in (fields.get("details") or {}).items()}
    token_fingerprint = fingerprint(token) if token else None
    if _stdlib_log.isEnabledFor(logging.DEBUG):
        log.debug(
            "audit",
            audit_event=str(event_type),
            outcome=outcome,
            severity=str(severity),
            client_id=client_id,
            subject=subject,
            token_fingerprint=token_fingerprint,
        )
    return {
        "occurred_at": fields.get("occurred_at") or utcnow(),
        "event_type": str(event_type),
        "outcome": outcome,
        "severity": str(severity),
        "actor": fields.get("actor"),
        "subject": subject,
        # bounded to their columns here too, whatever the caller checked
        "client_id": client_id[:64] if client_id else None,
        "ip": context.ip[:45] if context.ip else None,
        "user_agent": (context.user_agent or "")[:512] or None,
        "request_id": context.request_id,
        "token_fingerprint": token_fingerprint,
        "details": clean,
    }


def record_for_request(event_type: EventType, **fields: Any) -> None:
    """Record ``event_type`` with this request's context and commit it before the response:
    the one way a view writes its audit event (``fields`` as for :meth:`AuditTrail.record`).

    When the request's session has a transaction open (the request changed or locked
    something), the event joins it and the whole unit of work commits together. Otherwise the
    request changed nothing: the event goes through the group-commit writer
    (:meth:`AuditTrail.write`) and shares a commit with concurrent requests.
    """
    session = request_session()
    if service(AuditTrail).record_or_write(
        session, event_type, context=request_context(), **fields
    ):
        session.commit()
