"""The provider's part when a user's credentials die (``accounts.credentials``): plugged into
the account service at wiring (``services.py``) as a
:class:`~echo_identity.accounts.credentials.GrantRevoker`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, delete, update
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.idp.models import AuthorizationCode, TokenFamily

REVOKED_REASON = "credentials_revoked"  # token_families.revoked_reason


def revoke_user_grants(session: Session, user: User, now: datetime) -> dict[str, int]:
    """Delete the user's unredeemed authorization codes and revoke every live token family (its
    refresh tokens, and its access tokens through ``IssuedAccessToken``) on ``session``, without
    committing. A redeemed code is kept: a replay of it must still be recognised. Returns the
    counts (``token_families``, ``authorization_codes``)."""
    codes: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        delete(AuthorizationCode).where(
            AuthorizationCode.user_id == user.id, AuthorizationCode.redeemed_at.is_(None)
        )
    )
    families: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(TokenFamily)
        .where(TokenFamily.user_id == user.id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=REVOKED_REASON)
    )
    return {
        "token_families": int(families.rowcount),
        "authorization_codes": int(codes.rowcount),
    }
