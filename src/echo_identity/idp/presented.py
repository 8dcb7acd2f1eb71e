"""A token presented to /revoke or /introspect, whichever kind it turns out to be."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.accounts.credentials import credentials_void
from echo_identity.accounts.models import User
from echo_identity.crypto.digests import lookup_digest
from echo_identity.db import utcnow
from echo_identity.idp.clients import AuthlibClient
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.models import RefreshToken, TokenFamily
from echo_identity.idp.provider import Provider


@dataclass
class PresentedToken:
    kind: str  # "access_token" or "refresh_token"
    raw: str
    client_id: str
    scope: str
    active: bool
    claims: dict[str, Any] = field(default_factory=dict)
    refresh: RefreshToken | None = None

    # Authlib's TokenMixin, as far as revocation and introspection use it.
    def check_client(self, client: AuthlibClient) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return not self.active

    def is_revoked(self) -> bool:
        return not self.active


def find_presented_token(
    session: Session, provider: Provider, raw: str, hint: str | None
) -> PresentedToken | None:
    """The access or refresh token ``raw`` issued by us, or ``None`` if we never issued it.

    Expired or revoked tokens, and refresh tokens of a family that its user's disable or
    password change outlived, come back with ``active`` False; an access token whose signature
    or issuer is wrong is not ours and comes back as ``None``.
    """
    if raw.count(".") == 2:
        try:
            claims = provider.verifier.verify_access_token(raw)
        except InvalidTokenError:
            return None
        active = provider.token_state.access_token_problem(claims) is None
        return PresentedToken(
            "access_token",
            raw,
            claims["client_id"],
            str(claims.get("scope", "")),
            active,
            claims=claims,
        )
    row = session.scalar(
        select(RefreshToken).where(RefreshToken.token_digest == lookup_digest(raw))
    )
    if row is None:
        return None
    family = session.get(TokenFamily, row.family_id)
    user = session.get(User, family.user_id) if family and family.user_id else None
    now = utcnow()
    active = (
        family is not None
        and family.revoked_at is None
        and family.expires_at > now
        and row.rotated_at is None
        and row.expires_at > now
        # the family's user is disabled or revoked their credentials after it was created
        and not (
            user is not None
            and credentials_void(
                family.created_at,
                disabled=user.disabled,
                tokens_not_before=user.tokens_not_before,
            )
        )
    )
    claims = {
        "sub": user.sub if user else None,
        "exp": int(
            min(row.expires_at, family.expires_at if family else row.expires_at).timestamp()
        ),
        "iat": int(row.issued_at.timestamp()),
    }
    return PresentedToken("refresh_token", raw, row.client_id, row.scope, active, claims, row)
