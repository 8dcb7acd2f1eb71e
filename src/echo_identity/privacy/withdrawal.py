"""Consent withdrawal for OIDC applications: which clients a user has authorised, and taking an
application's access away again (GDPR Art. 7(3): withdrawing is as easy as giving).

Withdrawing an application's access revokes the client's token families for this user (their
refresh tokens at ``/token``, their access tokens at ``/verify``, ``/introspect`` and
``/userinfo`` through ``IssuedAccessToken``), deletes its unredeemed authorization codes, and
deletes the consent, so the next authorization asks the user again. Vault connections are
withdrawn by ``VaultService.disconnect`` (revoked upstream, tokens deleted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType
from echo_identity.audit.service import AuditTrail
from echo_identity.db import utcnow
from echo_identity.idp.models import Consent, OAuthClient, RefreshToken, TokenFamily
from echo_identity.idp.revocation import Revocations
from echo_identity.privacy.errors import ApplicationNotAuthorisedError
from echo_identity.web.context import NO_REQUEST, RequestContext

WITHDRAWN_REASON = "consent_withdrawn"  # token_families.revoked_reason


@dataclass(frozen=True)
class AuthorisedApplication:
    """One client a user has authorised, as the account page lists it."""

    client_id: str
    name: str
    scope: str
    granted_at: datetime  # the consent (or, without one, the first live grant)
    last_used_at: datetime | None  # the newest token issued in a live grant
    live_grants: int  # token families not revoked nor expired


@dataclass(frozen=True)
class AccessWithdrawn:
    """What withdrawing an application's access ended."""

    client_id: str
    token_families: int
    authorization_codes: int
    consent_deleted: bool


class ApplicationAccess:
    """A user's authorised applications in one database session; changes are flushed, the
    caller commits."""

    def __init__(self, session: Session, audit: AuditTrail) -> None:
        self._session = session
        self._audit = audit

    def applications(self, user: User) -> list[AuthorisedApplication]:
        """The clients ``user`` has consented to or holds a live grant of, by name."""
        consents = {
            row.client_id: row
            for row in self._session.scalars(select(Consent).where(Consent.user_id == user.id))
        }
        grants = {row.client_id: row for row in self._session.execute(self._live_grants(user))}
        client_ids = sorted({*consents, *grants})
        names: dict[str, str] = dict(
            self._session.execute(
                select(OAuthClient.client_id, OAuthClient.name).where(
                    OAuthClient.client_id.in_(client_ids)
                )
            ).all()
        )
        found = []
        for client_id in client_ids:
            consent, grant = consents.get(client_id), grants.get(client_id)
            first_at = grant.first_at if grant is not None else None
            granted_at = consent.granted_at if consent is not None else first_at
            assert granted_at is not None  # listed for a consent or a live grant
            found.append(
                AuthorisedApplication(
                    client_id=client_id,
                    name=names.get(client_id, client_id),
                    scope=consent.scope if consent is not None else "",
                    granted_at=granted_at,
                    last_used_at=grant.last_at or first_at if grant is not None else None,
                    live_grants=grant.families if grant is not None else 0,
                )
            )
        return sorted(found, key=lambda app: (app.name.casefold(), app.client_id))

    def withdraw(
        self, user: User, client_id: str, *, context: RequestContext = NO_REQUEST
    ) -> AccessWithdrawn:
        """Take ``client_id``'s access away from ``user``: revoke its token families for the
        user, delete its unredeemed codes and the consent, and record
        ``privacy.consent.withdrawn`` (flushed; the caller commits).

        Raises :class:`ApplicationNotAuthorisedError` when the user has neither a consent nor
        a live grant for the client (nothing is changed).
        """
        consent = self._session.scalar(
            select(Consent).where(Consent.user_id == user.id, Consent.client_id == client_id)
        )
        revoked = Revocations(self._session).revoke_client_grants(
            client_id, WITHDRAWN_REASON, user_id=user.id
        )
        if consent is None and not any(revoked.values()):
            raise ApplicationNotAuthorisedError()
        if consent is not None:
            self._session.delete(consent)
        self._audit.record(
            self._session,
            EventType.CONSENT_WITHDRAWN,
            context=context,
            user=user.sub,
            client_id=client_id,
            details={**revoked, "consent_deleted": consent is not None},
        )
        self._session.flush()
        return AccessWithdrawn(
            client_id=client_id,
            token_families=revoked["token_families"],
            authorization_codes=revoked["authorization_codes"],
            consent_deleted=consent is not None,
        )

    @staticmethod
    def _live_grants(user: User) -> Select[str, int, datetime, datetime]:
        """Per client: the user's live token families, the first created, the newest refresh."""
        now = utcnow()
        live = [
            TokenFamily.user_id == user.id,
            TokenFamily.revoked_at.is_(None),
            TokenFamily.expires_at > now,
        ]
        if user.tokens_not_before is not None:  # older families died with the credentials
            live.append(TokenFamily.created_at >= user.tokens_not_before)
        return (
            select(
                TokenFamily.client_id,
                func.count(func.distinct(TokenFamily.id)).label("families"),
                func.min(TokenFamily.created_at).label("first_at"),
                func.max(RefreshToken.issued_at).label("last_at"),
            )
            .outerjoin(RefreshToken, RefreshToken.family_id == TokenFamily.id)
            .where(*live)
            .group_by(TokenFamily.client_id)
        )
