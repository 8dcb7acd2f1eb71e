"""A user's data as one JSON document (GDPR Art. 15 access, Art. 20 portability), streamed.

:func:`export_chunks` yields the document in pieces: the profile, the browser sessions (their
ids only as fingerprints), the applications (OIDC consents and the grants issued to each
client: scopes and dates, never a token or its digest), the vault connections (provider,
scopes, dates, status, never a token), the vault consent records, and the audit events about
the user with their ``sub`` in place of the pseudonym. Audit events are read a page at a time
with a keyset cursor (``id > last``), so a user with 100k events exports in constant memory:
the pages walk the primary key once, whatever the table's size.

Nothing here writes; the caller records ``privacy.user.exported`` (before sending the first
byte) and owns the read session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.accounts.service import normalize_username
from echo_identity.accounts.sessions import SessionStore
from echo_identity.audit.models import AuditEvent
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.crypto.digests import fingerprint
from echo_identity.db import Database
from echo_identity.idp.models import Consent, OAuthClient, RefreshToken, TokenFamily
from echo_identity.vault.models import Connection, ConnectionConsent, Provider

EXPORT_FORMAT = "echo-identity-export/1"
AUDIT_PAGE_SIZE = 500


def find_user(session: Session, who: str) -> User | None:
    """The user whose ``sub`` or username is ``who``, or ``None``."""
    if len(who) > 256:
        return None
    by_sub = session.scalar(select(User).where(User.sub == who))
    if by_sub is not None:
        return by_sub
    return session.scalar(select(User).where(User.username == normalize_username(who)))


def stream_export(
    database: Database,
    sub: str,
    *,
    pseudonyms: Pseudonyms,
    sessions: SessionStore,
    exported_at: datetime,
    page_size: int = AUDIT_PAGE_SIZE,
) -> Iterator[str]:
    """:func:`export_chunks` of the user ``sub`` in a read session of its own, opened when
    the first piece is asked for and closed after the last (a response streamed after its
    request's session ended, or a file written by the CLI). Yields nothing when ``sub`` is no
    user's (erased in between)."""
    with database.read_session() as session:
        user = session.scalar(select(User).where(User.sub == sub))
        if user is None:
            return
        yield from export_chunks(
            session,
            user,
            pseudonym=pseudonyms.of(sub),
            sessions=sessions,
            exported_at=exported_at,
            page_size=page_size,
        )


def export_chunks(
    session: Session,
    user: User,
    *,
    pseudonym: str,
    sessions: SessionStore,
    exported_at: datetime,
    page_size: int = AUDIT_PAGE_SIZE,
) -> Iterator[str]:
    """The JSON document of everything held about ``user``, in pieces to write or send as
    they come (``pseudonym``: the user's pseudonym in the audit trail). Reads on ``session``;
    raises whatever the database or the session store raises."""
    head = {
        "format": EXPORT_FORMAT,
        "exported_at": exported_at,
        "profile": _profile(user),
        "sessions": _sessions(sessions, user.id),
        "applications": _applications(session, user.id),
        "vault_connections": _connections(session, user.id),
        "vault_consents": _vault_consents(session, user.id),
    }
    opening = _dumps(head)
    yield opening[:-1] + ', "audit_events": ['
    first = True
    for event in _audit_events(session, pseudonym, user.sub, page_size):
        yield ("" if first else ", ") + _dumps(event)
        first = False
    yield "]}\n"


def _dumps(value: object) -> str:
    return json.dumps(value, default=_encode, ensure_ascii=False, sort_keys=False)


def _encode(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot export a {type(value).__name__}")


def _profile(user: User) -> dict[str, Any]:
    return {
        "sub": user.sub,
        "username": user.username,
        "email": user.email,
        "admin": user.is_admin,
        "disabled": user.disabled,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "credentials_revoked_at": user.tokens_not_before,
    }


def _sessions(store: SessionStore, user_id: int) -> list[dict[str, Any]]:
    return [
        {
            "fingerprint": fingerprint(record.sid),
            "created_at": record.created_at,
            "last_seen_at": record.last_seen_at,
            "ip": record.ip,
            "user_agent": record.user_agent,
        }
        for record in store.for_user(user_id)
    ]


def _applications(session: Session, user_id: int) -> list[dict[str, Any]]:
    """Per client: what the user consented to and the grants (token families) issued."""
    consents = {
        row.client_id: row
        for row in session.scalars(select(Consent).where(Consent.user_id == user_id))
    }
    last_used = (
        select(RefreshToken.family_id, func.max(RefreshToken.issued_at).label("last_used_at"))
        .group_by(RefreshToken.family_id)
        .subquery()
    )
    families = session.execute(
        select(TokenFamily, last_used.c.last_used_at)
        .outerjoin(last_used, last_used.c.family_id == TokenFamily.id)
        .where(TokenFamily.user_id == user_id)
        .order_by(TokenFamily.client_id, TokenFamily.created_at)
    ).all()
    client_ids = sorted({*consents, *(family.client_id for family, _ in families)})
    named = select(OAuthClient.client_id, OAuthClient.name).where(
        OAuthClient.client_id.in_(client_ids)
    )
    names: dict[str, str] = dict(session.execute(named).all())
    applications = []
    for client_id in client_ids:
        consent = consents.get(client_id)
        applications.append(
            {
                "client_id": client_id,
                "client_name": names.get(client_id),
                "consented_scope": consent.scope if consent else None,
                "consent_granted_at": consent.granted_at if consent else None,
                "consent_updated_at": consent.updated_at if consent else None,
                "grants": [
                    {
                        "scope": family.scope,
                        "created_at": family.created_at,
                        "last_used_at": used,
                        "expires_at": family.expires_at,
                        "revoked_at": family.revoked_at,
                        "revoked_reason": family.revoked_reason,
                    }
                    for family, used in families
                    if family.client_id == client_id
                ],
            }
        )
    return applications


def _connections(session: Session, user_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Connection, Provider.name)
        .join(Provider, Provider.id == Connection.provider_id)
        .where(Connection.user_id == user_id)
        .order_by(Provider.name)
    ).all()
    return [
        {
            "provider": name,
            "status": connection.status,
            "scope": connection.scope,
            "created_at": connection.created_at,
            "updated_at": connection.updated_at,
            "access_token_expires_at": connection.expires_at,
            "last_refreshed_at": connection.last_refreshed_at,
        }
        for connection, name in rows
    ]


def _vault_consents(session: Session, user_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ConnectionConsent)
        .where(ConnectionConsent.user_id == user_id)
        .order_by(ConnectionConsent.granted_at, ConnectionConsent.id)
    )
    return [
        {
            "provider": consent.provider_name,
            "scope": consent.scope,
            "consent_text_version": consent.consent_text_version,
            "services": list(consent.client_ids or []),
            "granted_at": consent.granted_at,
            "withdrawn_at": consent.withdrawn_at,
        }
        for consent in rows
    ]


# Columns, not entities: rows read a page at a time never pile up in the session's identity map.
_EVENT_COLUMNS = (
    AuditEvent.id,
    AuditEvent.occurred_at,
    AuditEvent.event_type,
    AuditEvent.outcome,
    AuditEvent.severity,
    AuditEvent.actor,
    AuditEvent.client_id,
    AuditEvent.ip,
    AuditEvent.user_agent,
    AuditEvent.request_id,
    AuditEvent.token_fingerprint,
    AuditEvent.details,
)


def _audit_events(
    session: Session, pseudonym: str, sub: str, page_size: int
) -> Iterator[dict[str, Any]]:
    """The events whose subject is ``pseudonym``, oldest first, a page at a time (keyset on
    the primary key: each page starts after the last id of the one before), each with
    ``subject`` set to ``sub``."""
    last_id = 0
    while True:
        page = session.execute(
            select(*_EVENT_COLUMNS)
            .where(AuditEvent.subject == pseudonym, AuditEvent.id > last_id)
            .order_by(AuditEvent.id)
            .limit(page_size)
        ).all()
        for row in page:
            event = row._asdict()
            yield {**event, "subject": sub}
        if len(page) < page_size:
            return
        last_id = page[-1].id
