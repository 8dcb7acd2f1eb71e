"""Credentials die with their owner: one operation for disable, password change and reset.

:func:`revoke_user_credentials` ends everything a user's earlier authentication produced:

- ``users.tokens_not_before`` is set to now. Authorization codes and token families created
  before it are refused wherever they are checked (code and refresh grants, ``/verify``,
  ``/introspect``, the bearer APIs), so nothing minted earlier can come back. ``/verify``,
  ``/introspect`` and the bearer APIs read it (and ``disabled``) from a per-process cache, so
  there it takes effect within a second; the token families revoked below, at once.
- What the layers above hold for the user is ended in the same transaction by the
  :class:`GrantRevoker` functions they plug in at wiring (``services.py``): the identity
  provider deletes the user's unredeemed authorization codes and revokes every live token
  family (its refresh tokens at ``/token``, its access tokens through ``IssuedAccessToken``).
  Accounts sits below the provider and never imports it.
- Every browser session is deleted from the session store. A session also carries the
  *credentials epoch* it was signed in under (:data:`SESSION_EPOCH_KEY`); a session whose
  epoch is not the user's current one is ended on its next request, which covers a sign-in
  that verified the old password while the change was being committed.

Order matters on PostgreSQL (READ COMMITTED). The ``users`` row is updated first, so the
operation holds its row lock from the start; code issuance and code redemption read that row
``FOR SHARE`` before they write. A concurrent redemption therefore either runs first (its family
is committed before the revokers' ``UPDATE token_families`` starts, and is revoked by it) or
waits for our commit and then reads the new ``tokens_not_before`` (and refuses the earlier
code). On SQLite every writer holds the single write lock for its whole transaction, so the two
never overlap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.accounts.sessions import SessionStore
from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.service import AuditTrail
from echo_identity.db import utcnow
from echo_identity.web.context import NO_REQUEST, RequestContext

SESSION_EPOCH_KEY = "credentials_epoch"  # browser-session data: the epoch it was signed in under


class GrantRevoker(Protocol):
    """Ends, on ``session`` and without committing, what a layer above holds for ``user``
    (the identity provider: codes and token families) as of ``now``; returns how many of each
    kind it ended, e.g. ``{"token_families": 2, "authorization_codes": 1}``."""

    def __call__(self, session: Session, user: User, now: datetime) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class CredentialsRevoked:
    """What :func:`revoke_user_credentials` ended, for the CLI's ``--json`` and the audit:
    ``sessions`` browser sessions and, in ``grants``, the counts each revoker returned."""

    user: User
    sessions: int
    grants: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"sessions": self.sessions, **self.grants}


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
    audit: AuditTrail,
    revokers: Sequence[GrantRevoker],
    cause: EventType,
    context: RequestContext = NO_REQUEST,
    actor: str | None = None,
    details: dict[str, Any] | None = None,
) -> CredentialsRevoked:
    """End every session of ``user`` and, through ``revokers``, every code and token family,
    and commit.

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
    grants: dict[str, int] = {}
    for revoker in revokers:
        grants.update(revoker(session, user, now))
    audit.record(session, cause, context=context, actor=actor, user=user.sub, details=details)
    audit.record(
        session,
        EventType.CREDENTIALS_REVOKED,
        context=context,
        severity=Severity.WARNING,
        actor=actor,
        user=user.sub,
        details={"cause": str(cause), **grants},
    )
    session.commit()
    ended = sessions.delete_for_user(user.id)
    return CredentialsRevoked(user, ended, grants)
