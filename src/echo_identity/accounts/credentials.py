"""Credentials die with their owner: one operation for disable, password change and reset.

:func:`revoke_user_credentials` ends everything a user's earlier authentication produced:

- ``users.tokens_not_before`` is set to now. Authorization codes and token families created
  before it are refused wherever they are checked (code and refresh grants, ``/verify``,
  ``/introspect``, the bearer APIs), so nothing minted earlier can come back.
- The user's unredeemed authorization codes are deleted and every live token family revoked
  (its refresh tokens at ``/token``, its access tokens through ``IssuedAccessToken``).
- Every browser session is deleted from the session store. A session also carries the
  *credentials epoch* it was signed in under (:data:`SESSION_EPOCH_KEY`); a session whose
  epoch is not the user's current one is ended on its next request, which covers a sign-in
  that verified the old password while the change was being committed.

Order matters on PostgreSQL (READ COMMITTED). The ``users`` row is updated first, so the
operation holds its row lock from the start; code issuance and code redemption read that row
``FOR SHARE`` before they write. A concurrent redemption therefore either runs first (its family
is committed before our ``UPDATE token_families`` starts, and is revoked by it) or waits for our
commit and then reads the new ``tokens_not_before`` (and refuses the earlier code). On SQLite
every writer holds the single write lock for its whole transaction, so the two never overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.accounts.sessions import SessionStore
from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.service import record
from echo_identity.db import utcnow

# The idp tables are revoked here, below the idp layer, so that one operation serves the
# account pages and the CLI alike; only the two models are needed, never idp logic.
from echo_identity.idp.models import AuthorizationCode, TokenFamily
from echo_identity.web.context import NO_REQUEST, RequestContext

REVOKED_REASON = "credentials_revoked"  # token_families.revoked_reason
SESSION_EPOCH_KEY = "credentials_epoch"  # browser-session data: the epoch it was signed in under


@dataclass(frozen=True)
class CredentialsRevoked:
    """What :func:`revoke_user_credentials` ended, for the CLI's ``--json`` and the audit."""

    user: User
    sessions: int
    token_families: int
    authorization_codes: int

    def counts(self) -> dict[str, int]:
        return {
            "sessions": self.sessions,
            "token_families": self.token_families,
            "authorization_codes": self.authorization_codes,
        }


def credentials_epoch(user: User) -> str | None:
    """The user's current credentials epoch as stored in a browser session (``None``: never
    revoked). Equal strings mean the session was signed in after the last revocation."""
    since = user.tokens_not_before
    return None if since is None else since.astimezone(UTC).isoformat(timespec="microseconds")


def credentials_void(
    created_at: datetime, *, disabled: bool, tokens_not_before: datetime | None
) -> bool:
    """True when a code or token family created at ``created_at`` for a user must be refused:
    the user is disabled, or revoked their credentials after it was created."""
    return disabled or (tokens_not_before is not None and created_at < tokens_not_before)


def revoke_user_credentials(
    session: Session,
    sessions: SessionStore,
    user: User,
    *,
    cause: EventType,
    context: RequestContext = NO_REQUEST,
    actor: str | None = None,
    details: dict[str, Any] | None = None,
) -> CredentialsRevoked:
    """End every session, authorization code and token family of ``user`` and commit.

    The caller has already changed ``user`` (new hash, ``disabled``) in ``session`` without
    committing; that change, ``tokens_not_before``, the revocations, the ``cause`` event and
    ``auth.credentials.revoked`` are committed together, and the browser sessions are deleted
    right after (the session store writes through its own connection). Raises whatever the
    database or the session store raises; a session left behind by a failing store is still
    refused on its next request (its epoch is stale).
    """
    now = utcnow()
    user.tokens_not_before = now
    session.flush()  # UPDATE users first: its row lock orders us against code redemption
    codes = session.execute(
        delete(AuthorizationCode).where(
            AuthorizationCode.user_id == user.id, AuthorizationCode.redeemed_at.is_(None)
        )
    )
    families = session.execute(
        update(TokenFamily)
        .where(TokenFamily.user_id == user.id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=REVOKED_REASON)
    )
    code_count = int(codes.rowcount)  # type: ignore[attr-defined]
    family_count = int(families.rowcount)  # type: ignore[attr-defined]
    record(session, cause, context=context, actor=actor, user=user.sub, details=details)
    record(
        session,
        EventType.CREDENTIALS_REVOKED,
        context=context,
        severity=Severity.WARNING,
        actor=actor,
        user=user.sub,
        details={
            "cause": str(cause),
            "token_families": family_count,
            "authorization_codes": code_count,
        },
    )
    session.commit()
    ended = sessions.delete_for_user(user.id)
    return CredentialsRevoked(user, ended, family_count, code_count)
