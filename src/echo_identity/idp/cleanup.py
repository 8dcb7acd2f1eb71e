"""Housekeeping of the provider's tables: rows that can no longer change any decision go.

The application's worker calls :func:`purge_expired` on every pass, with the
:class:`Retention` built once from settings. What is deleted, and why it is safe:

- **token families** past their absolute expiry, plus the longest access-token lifetime and the
  verification leeway (an access token minted just before the family expired stays revocable
  until it expires too). Their refresh tokens and issued-access-token records go with them
  (``ON DELETE CASCADE``).
- **issued-access-token records** and **revoked-jti records** whose token expired more than the
  leeway ago: /verify and /introspect refuse such a token for its ``exp`` alone.
- **authorization codes** once the family a replay could still revoke is gone (code expiry plus
  ``ECHO_REFRESH_TOKEN_ABSOLUTE_TTL``), so code-reuse detection keeps working for as long as it
  can protect anything.

Each kind purged is recorded as one audit event with the number of rows
(``oauth.code.purged``, ``oauth.token_family.purged``, ``oauth.access_token.purged``), which
the security report sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, Delete, delete

from echo_identity.audit.events import EventType
from echo_identity.audit.service import AuditTrail
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.idp.models import (
    AuthorizationCode,
    IssuedAccessToken,
    RevokedAccessToken,
    TokenFamily,
)
from echo_identity.idp.tokens import LEEWAY_SECONDS


@dataclass(frozen=True)
class Retention:
    """How long provider rows can still change a decision: the settings the purge reads."""

    access_token_ttl: timedelta
    refresh_token_absolute_ttl: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(
            access_token_ttl=timedelta(seconds=settings.access_token_ttl),
            refresh_token_absolute_ttl=timedelta(seconds=settings.refresh_token_absolute_ttl),
        )


def _statements(retention: Retention, now: datetime) -> dict[EventType, list[Delete]]:
    leeway = timedelta(seconds=LEEWAY_SECONDS)
    tokens_gone = now - leeway
    families_gone = tokens_gone - retention.access_token_ttl
    codes_gone = now - retention.refresh_token_absolute_ttl - leeway
    return {
        EventType.TOKEN_FAMILIES_PURGED: [
            delete(TokenFamily).where(TokenFamily.expires_at < families_gone)
        ],
        EventType.ACCESS_TOKENS_PURGED: [
            delete(IssuedAccessToken).where(IssuedAccessToken.expires_at < tokens_gone),
            delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < tokens_gone),
        ],
        EventType.CODES_PURGED: [
            delete(AuthorizationCode).where(AuthorizationCode.expires_at < codes_gone)
        ],
    }


def purge_expired(
    database: Database, audit: AuditTrail, retention: Retention, now: datetime
) -> dict[str, int]:
    """Delete what can no longer matter at ``now`` (see the module docstring) in one
    transaction, committed here, recording through ``audit`` one event per kind that had rows;
    returns the counts by event type (empty when nothing was purged)."""
    purged: dict[str, int] = {}
    with database.transaction() as session:
        for event_type, statements in _statements(retention, now).items():
            count = 0
            for statement in statements:
                result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
                count += int(result.rowcount)
            if count:
                audit.record(session, event_type, actor="worker", details={"count": count})
                purged[str(event_type)] = count
    return purged
