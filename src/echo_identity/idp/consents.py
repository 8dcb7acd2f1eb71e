"""Which scopes each user has granted each client."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType
from echo_identity.audit.service import AuditTrail
from echo_identity.idp.models import Consent
from echo_identity.web.context import NO_REQUEST, RequestContext


class Consents:
    """Consents in one database session; changes are flushed, the caller commits."""

    def __init__(self, session: Session, audit: AuditTrail) -> None:
        self._session = session
        self._audit = audit

    def _row(self, user_id: int, client_id: str) -> Consent | None:
        return self._session.scalar(
            select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
        )

    def missing(self, user_id: int, client_id: str, scope: str) -> list[str]:
        """The scopes of ``scope`` this user has not granted this client yet."""
        row = self._row(user_id, client_id)
        granted = set(row.scope.split()) if row else set()
        return [s for s in scope.split() if s not in granted]

    def grant(
        self, user: User, client_id: str, scope: str, *, context: RequestContext = NO_REQUEST
    ) -> None:
        """Add ``scope`` to what ``user`` granted the client and record ``consent.granted``
        (flushed; the caller commits)."""
        row = self._row(user.id, client_id)
        if row is None:
            self._session.add(Consent(user_id=user.id, client_id=client_id, scope=scope))
        else:
            row.scope = " ".join(dict.fromkeys([*row.scope.split(), *scope.split()]))
        self._audit.record(
            self._session,
            EventType.CONSENT_GRANTED,
            context=context,
            user=user.sub,
            client_id=client_id,
            details={"scope": scope},
        )
        self._session.flush()
