"""Which scopes each user has granted each client."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.idp.models import Consent


class Consents:
    def __init__(self, session: Session) -> None:
        self._session = session

    def _row(self, user_id: int, client_id: str) -> Consent | None:
        return self._session.scalar(
            select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
        )

    def missing(self, user_id: int, client_id: str, scope: str) -> list[str]:
        """The scopes of ``scope`` this user has not granted this client yet."""
        row = self._row(user_id, client_id)
        granted = set(row.scope.split()) if row else set()
        return [s for s in scope.split() if s not in granted]

    def grant(self, user_id: int, client_id: str, scope: str) -> None:
        """Add ``scope`` to what the user granted the client (the caller commits)."""
        row = self._row(user_id, client_id)
        if row is None:
            self._session.add(Consent(user_id=user_id, client_id=client_id, scope=scope))
            return
        row.scope = " ".join(dict.fromkeys([*row.scope.split(), *scope.split()]))
