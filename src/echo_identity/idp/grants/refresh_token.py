"""Refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14).

Every use rotates the token. Presenting a token that was already rotated means two parties
hold it; the whole family (every token from the same authorization) is revoked and a
high-severity audit event recorded. A family created before its user was disabled or changed
their password (``users.tokens_not_before``) is refused with ``invalid_grant``.

The hooks only add to the request's session; /token commits once, so the rotation of the old
token and the new tokens are committed together.
"""

from __future__ import annotations

from typing import ClassVar

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError
from sqlalchemy import select, update

from echo_identity.accounts.credentials import credentials_void
from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType
from echo_identity.crypto.digests import lookup_digest
from echo_identity.db import utcnow
from echo_identity.idp.grants.authorization_code import CLIENT_AUTH_METHODS
from echo_identity.idp.models import RefreshToken, TokenFamily
from echo_identity.idp.owner import ResourceOwner
from echo_identity.idp.provider import Provider
from echo_identity.idp.revocation import revoke_after_reuse
from echo_identity.web.context import request_context, request_session


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def validate_token_request(self) -> None:
        client = self._validate_request_client()
        self.request.client = client
        token: RefreshToken = self._validate_request_token(client)
        self._validate_token_scope(token)
        # Claim the token only now, so a request refused for its scope does not burn it. A
        # concurrent use of the same token waits for this request's commit, then finds it
        # rotated: reuse.
        session = request_session()
        claimed = session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token.id, RefreshToken.rotated_at.is_(None))
            .values(rotated_at=utcnow())
        )
        if not claimed.rowcount:  # type: ignore[attr-defined]
            self._revoke_reused(token, self.request.form["refresh_token"])
            raise InvalidGrantError()
        self.request.refresh_token = token

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        """The live, unused refresh token, or ``None`` (reuse revokes the family first)."""
        session = request_session()
        row = session.scalar(
            select(RefreshToken).where(RefreshToken.token_digest == lookup_digest(refresh_token))
        )
        if row is None:
            return None
        if row.rotated_at is not None:
            self._revoke_reused(row, refresh_token)
            return None
        family = session.get(TokenFamily, row.family_id)
        now = utcnow()
        if family is None or family.revoked_at is not None or family.expires_at <= now:
            return None
        if row.expires_at <= now or _refused_by_user(family):
            return None
        return row

    def _revoke_reused(self, row: RefreshToken, presented: str) -> None:
        provider: Provider = self.server.provider
        revoke_after_reuse(
            request_session(),
            provider.audit,
            EventType.TOKEN_REUSE_DETECTED,
            row.family_id,
            row.client_id,
            presented,
            request_context(),
        )

    def authenticate_user(self, refresh_token: RefreshToken) -> ResourceOwner:
        """The family's user; raises ``invalid_grant`` when there is none any more, or the user
        was disabled or revoked their credentials since the family was created."""
        session = request_session()
        family = session.get(TokenFamily, refresh_token.family_id)
        if family is None or _refused_by_user(family):
            raise InvalidGrantError()
        user = session.get(User, family.user_id)
        assert user is not None  # checked by _refused_by_user
        auth_time = int(family.auth_time.timestamp()) if family.auth_time else None
        return ResourceOwner(user, auth_time)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        """Nothing to do: the token was marked rotated when the request was validated."""


def _refused_by_user(family: TokenFamily) -> bool:
    """True when no user stands behind the family any more, or its user was disabled or
    revoked their credentials (disable, password change, reset) after it was created."""
    user = request_session().get(User, family.user_id) if family.user_id else None
    if user is None:
        return True
    return credentials_void(
        family.created_at, disabled=user.disabled, tokens_not_before=user.tokens_not_before
    )
