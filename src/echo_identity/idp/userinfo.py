"""Standard claims about a user, released per granted scope (OIDC Core §5.4)."""

from __future__ import annotations

from typing import Any

from echo_identity.accounts.models import User


def user_claims(user: User, scope: str) -> dict[str, Any]:
    """``sub`` always; ``preferred_username`` with ``profile``; ``email`` with ``email``.

    ``email_verified`` is false: Echo Identity does not verify addresses yet.
    """
    scopes = set(scope.split())
    claims: dict[str, Any] = {"sub": user.sub}
    if "profile" in scopes:
        claims["preferred_username"] = user.username
        claims["updated_at"] = int(user.updated_at.timestamp())
    if "email" in scopes:
        claims["email"] = user.email
        claims["email_verified"] = False
    return claims
