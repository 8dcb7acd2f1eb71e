"""Who may receive a user's provider token: the services named on the consent page.

The connect page lists the *services* that will receive the token: enabled OAuth clients
registered for the provider (``clients create --vault-provider NAME``). The consent recorded at
the callback stores their client ids, and a service acting with its own client-credentials
token may fetch the user's token only while the user's active consent for that provider names
it. A service registered later is not covered until the user reconnects (which records a fresh
consent and withdraws the earlier one); disconnecting withdraws it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.db import utcnow
from echo_identity.idp.models import OAuthClient
from echo_identity.vault.models import ConnectionConsent

# Constant statements (compiled once, cached by SQLAlchemy): the vault's hand-out asks them on
# every call.
_USER_BY_SUB = select(User).where(User.sub == bindparam("sub"))
_ACTIVE_CONSENTS = select(ConnectionConsent.provider_name, ConnectionConsent.client_ids).where(
    ConnectionConsent.user_id == bindparam("user_id"), ConnectionConsent.withdrawn_at.is_(None)
)

CONSENT_TEXT_VERSION = "2026-12-01"  # lists the services that receive the token


@dataclass(frozen=True)
class ReceivingService:
    """A service (OAuth client) that may receive tokens of one provider."""

    client_id: str
    name: str


class VaultConsents:
    """Consent records in one database session (the caller commits)."""

    def __init__(self, session: Session, clock: Callable[[], datetime] = utcnow) -> None:
        self._session = session
        self._clock = clock

    def services(self, provider_name: str) -> list[ReceivingService]:
        """The enabled clients registered for ``provider_name``, by name.

        Registrations are a JSON list per client; clients are few, so they are filtered here
        rather than with a dialect-specific JSON query.
        """
        rows = self._session.execute(
            select(OAuthClient.client_id, OAuthClient.name, OAuthClient.vault_providers)
            .where(OAuthClient.disabled.is_(False))
            .order_by(OAuthClient.name, OAuthClient.client_id)
        ).all()
        return [
            ReceivingService(row.client_id, row.name)
            for row in rows
            if provider_name in (row.vault_providers or [])
        ]

    def grant(
        self, user: User, provider_name: str, scope: str, client_ids: Sequence[str]
    ) -> ConnectionConsent:
        """Record a fresh consent naming ``client_ids``; earlier active ones are withdrawn."""
        self.withdraw(user.id, provider_name)
        consent = ConnectionConsent(
            user_id=user.id,
            provider_name=provider_name,
            scope=scope,
            consent_text_version=CONSENT_TEXT_VERSION,
            client_ids=list(dict.fromkeys(client_ids)),
            granted_at=self._clock(),
        )
        self._session.add(consent)
        return consent

    def withdraw(self, user_id: int, provider_name: str) -> None:
        """Mark every active consent of the user for the provider withdrawn."""
        for consent in self._session.scalars(
            select(ConnectionConsent).where(
                ConnectionConsent.user_id == user_id,
                ConnectionConsent.provider_name == provider_name,
                ConnectionConsent.withdrawn_at.is_(None),
            )
        ):
            consent.withdrawn_at = self._clock()

    def covered_providers(self, sub: str, client_id: str) -> tuple[User, set[str]] | None:
        """The enabled user ``sub`` and the providers whose active consent names
        ``client_id``; ``None`` for an unknown or disabled user. The caller answers "none" and
        "no such user" alike, so it cannot be used to enumerate users."""
        user = self._session.scalar(_USER_BY_SUB, {"sub": sub})
        if user is None or user.disabled:
            return None
        rows = self._session.execute(_ACTIVE_CONSENTS, {"user_id": user.id}).all()
        return user, {row.provider_name for row in rows if client_id in (row.client_ids or [])}
