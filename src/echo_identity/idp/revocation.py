"""Revocation state of tokens: token families, single access tokens (by jti)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from echo_identity.accounts.credentials import credentials_void
from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.service import AuditTrail
from echo_identity.db import utcnow
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.models import (
    IssuedAccessToken,
    OAuthClient,
    RevokedAccessToken,
    TokenFamily,
)
from echo_identity.web.context import RequestContext


class Revocations:
    """Reads and records revocations in one database session (the caller commits)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def is_access_token_revoked(self, jti: str) -> bool:
        """True when the jti was revoked itself, or belongs to a token family that is revoked,
        whose user is disabled, or that was created before the user's ``tokens_not_before``
        (disable, password change or reset).

        One indexed lookup of the jti deny list and one join IssuedAccessToken → TokenFamily →
        User: the user's state costs no query of its own. A jti without a family (a
        client-credentials token) is revoked only through the deny list.
        """
        if self._session.get(RevokedAccessToken, jti) is not None:
            return True
        family = self._session.execute(
            select(
                TokenFamily.revoked_at,
                TokenFamily.created_at,
                User.disabled,
                User.tokens_not_before,
            )
            .select_from(IssuedAccessToken)
            .join(TokenFamily, IssuedAccessToken.family_id == TokenFamily.id)
            .outerjoin(User, TokenFamily.user_id == User.id)
            .where(IssuedAccessToken.jti == jti)
        ).first()
        if family is None:
            return False
        if family.revoked_at is not None:
            return True
        # Compared here rather than in SQL: SQLite stores datetimes as text.
        return credentials_void(
            family.created_at,
            disabled=bool(family.disabled),
            tokens_not_before=family.tokens_not_before,
        )

    def access_token_problem(self, claims: dict[str, Any]) -> InvalidTokenError | None:
        """Why a correctly signed access token must still be refused, or ``None``.

        Revoked (itself, its family, or by its user's disable / password change / reset), or
        minted for a client that has since been disabled.
        """
        if self.is_access_token_revoked(str(claims["jti"])):
            return InvalidTokenError("The token has been revoked.", "token_revoked")
        disabled = self._session.scalar(
            select(OAuthClient.disabled).where(OAuthClient.client_id == claims["client_id"])
        )
        if disabled is None or disabled:
            return InvalidTokenError("The token's client is disabled.", "client_disabled")
        return None

    def revoke_access_token(self, jti: str, expires_at: int) -> None:
        if self._session.get(RevokedAccessToken, jti) is None:
            self._session.add(
                RevokedAccessToken(jti=jti, expires_at=datetime.fromtimestamp(expires_at, UTC))
            )

    def revoke_family(self, family_id: str, reason: str) -> bool:
        """Revoke every token of the family; False when it was already revoked."""
        result = self._session.execute(
            update(TokenFamily)
            .where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def revoke_after_reuse(
    session: Session,
    audit: AuditTrail,
    event_type: EventType,
    family_id: str | None,
    client_id: str,
    presented: str,
    context: RequestContext,
) -> None:
    """A one-time credential came back: revoke its token family and record a high-severity
    event (flushed; the request, which fails afterwards, commits them with its refusal)."""
    if family_id:
        Revocations(session).revoke_family(family_id, str(event_type))
    audit.record(
        session,
        event_type,
        context=context,
        outcome="failure",
        severity=Severity.HIGH,
        client_id=client_id,
        token=presented,
        details={"family_id": family_id},
    )
    session.flush()
