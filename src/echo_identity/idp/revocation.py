"""Revocation state of tokens: token families, single access tokens (by jti)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, bindparam, delete, exists, literal_column, select, true, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from echo_identity.accounts.credentials import credentials_void
from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.service import AuditTrail
from echo_identity.cache import FreshFor
from echo_identity.clock import SYSTEM_CLOCK, Clock
from echo_identity.db import Database, utcnow
from echo_identity.idp.clients import AuthlibClient
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.models import (
    AuthorizationCode,
    IssuedAccessToken,
    OAuthClient,
    RevokedAccessToken,
    TokenFamily,
)
from echo_identity.web.context import RequestContext


@dataclass(frozen=True)
class UserStanding:
    """What a user's row says about the tokens minted for them (``accounts.credentials``)."""

    disabled: bool
    tokens_not_before: datetime | None


# The jti deny list and the token's family in one statement, always one row: a one-row
# derived table LEFT JOINed to the family (client-credentials tokens have none).
_JTI: BindParameter[Any] = bindparam("jti")
_ONE_ROW = select(literal_column("1").label("one")).subquery()
_FAMILY = (
    select(TokenFamily.revoked_at, TokenFamily.created_at, TokenFamily.user_id)
    .select_from(IssuedAccessToken)
    .join(TokenFamily, IssuedAccessToken.family_id == TokenFamily.id)
    .where(IssuedAccessToken.jti == _JTI)
    .subquery()
)
ACCESS_TOKEN_STATE: Select[Any] = select(
    exists().where(RevokedAccessToken.jti == _JTI).label("denied"),
    _FAMILY.c.revoked_at,
    _FAMILY.c.created_at,
    _FAMILY.c.user_id,
).select_from(_ONE_ROW.outerjoin(_FAMILY, true()))
USER_STANDING = select(User.disabled, User.tokens_not_before).where(User.id == bindparam("user_id"))


class AccessTokenState:
    """Whether a correctly signed access token must still be refused: one per app, safe to
    share between threads (it holds no session).

    Per request: one Core statement on this thread's read connection (``Database.read_row``,
    never the request's transaction, so never SQLite's write lock) for the jti deny list and
    the token family, which are never cached (a revoked token or family is refused on its
    next use); the user's ``disabled`` / ``tokens_not_before`` and the client's state from
    per-process caches that every process re-reads at least once a second
    (``echo_identity.cache``).
    """

    def __init__(
        self,
        database: Database,
        clients: Callable[[str], AuthlibClient | None],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``clients``: the enabled client with an id, or ``None`` (``Provider.client``)."""
        self._database = database
        self._clients = clients
        self.users: FreshFor[UserStanding] = FreshFor(clock)

    def is_access_token_revoked(self, jti: str) -> bool:
        """True when the jti was revoked itself, or belongs to a token family that is revoked,
        whose user is disabled, or that was created before the user's ``tokens_not_before``
        (disable, password change or reset). A jti without a family (a client-credentials
        token) is revoked only through the deny list."""
        state = self._database.read_row(ACCESS_TOKEN_STATE, {"jti": jti})
        if state is None or state["denied"]:  # no row at all cannot happen: one-row table
            return True
        if state["created_at"] is None:  # no family
            return False
        if state["revoked_at"] is not None:
            return True
        if state["user_id"] is None:
            return False
        standing = self.users.get(str(state["user_id"]), self._read_user)
        if standing is None:  # the user is gone: as before, the family alone decides
            return False
        # Compared here rather than in SQL: SQLite stores datetimes as text.
        return credentials_void(
            state["created_at"],
            disabled=standing.disabled,
            tokens_not_before=standing.tokens_not_before,
        )

    def access_token_problem(self, claims: dict[str, Any]) -> InvalidTokenError | None:
        """Why a correctly signed access token must still be refused, or ``None``.

        Revoked (itself, its family, by its user's disable / password change / reset, or by
        its client's ``tokens_not_before``: ``clients revoke-tokens``), or minted for a client
        that has since been disabled (or is gone).
        """
        if self.is_access_token_revoked(str(claims["jti"])):
            return InvalidTokenError("The token has been revoked.", "token_revoked")
        client = self._clients(str(claims["client_id"]))
        if client is None:
            return InvalidTokenError("The token's client is disabled.", "client_disabled")
        cutoff = client.row.tokens_not_before
        # iat has whole seconds: a token issued in the cut-off's own second is refused too
        # (one that came just after it must be fetched again a second later).
        if cutoff is not None and int(claims.get("iat", 0)) < math.ceil(cutoff.timestamp()):
            return InvalidTokenError("The token has been revoked.", "token_revoked")
        return None

    def _read_user(self, user_id: str) -> UserStanding | None:
        row = self._database.read_row(USER_STANDING, {"user_id": int(user_id)})
        if row is None:
            return None
        return UserStanding(bool(row["disabled"]), row["tokens_not_before"])


class Revocations:
    """Records revocations in one database session (the caller commits). Reading whether a
    token is revoked is :class:`AccessTokenState`'s."""

    def __init__(self, session: Session) -> None:
        self._session = session

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

    def revoke_client_grants(
        self, client_id: str, reason: str, *, user_id: int | None = None
    ) -> dict[str, int]:
        """Revoke every live token family of the client (its refresh tokens, and its access
        tokens through ``IssuedAccessToken``) and delete its unredeemed authorization codes;
        only the user's when ``user_id`` is given. A redeemed code is kept: a replay of it must
        still be recognised. Flushed, not committed. Returns the counts (``token_families``,
        ``authorization_codes``), as :func:`~echo_identity.idp.credentials.revoke_user_grants`.

        For every user (no ``user_id``), the client's ``tokens_not_before`` is set to now as
        well: its access tokens issued until now are refused wherever they are checked,
        client-credentials tokens included (they belong to no family and are not recorded one
        by one). Every process sees the cut-off within a second (``Provider.client``'s cache).
        """
        families = update(TokenFamily).where(
            TokenFamily.client_id == client_id, TokenFamily.revoked_at.is_(None)
        )
        codes = delete(AuthorizationCode).where(
            AuthorizationCode.client_id == client_id, AuthorizationCode.redeemed_at.is_(None)
        )
        if user_id is not None:
            families = families.where(TokenFamily.user_id == user_id)
            codes = codes.where(AuthorizationCode.user_id == user_id)
        now = utcnow()
        revoked = self._session.execute(families.values(revoked_at=now, revoked_reason=reason))
        deleted = self._session.execute(codes)
        if user_id is None:
            self._session.execute(
                update(OAuthClient)
                .where(OAuthClient.client_id == client_id)
                .values(tokens_not_before=now)
            )
        self._session.flush()
        return {
            "token_families": int(revoked.rowcount),  # type: ignore[attr-defined]
            "authorization_codes": int(deleted.rowcount),  # type: ignore[attr-defined]
        }


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
