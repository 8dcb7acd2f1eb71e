"""The one place tests make users, clients, audit events and other records: through the
services the application uses (``AccountService``, ``ClientRegistry``, ``AuditTrail``), never
through the command line (``tests/functional/test_cli_*.py`` test the command line itself)."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import Any

from echo_identity.accounts.passwords import Passwords
from echo_identity.accounts.service import AccountService
from echo_identity.audit.events import EventType
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.idp.clients import ClientRegistry, RegisteredClient
from tests.support.environment import FAST_ARGON2

_counter = itertools.count(1)
_NO_AUDIT = AuditTrail(Pseudonyms.from_secret(secrets.token_bytes(32)))


def fast_passwords() -> Passwords:
    return Passwords(
        int(FAST_ARGON2["ECHO_ARGON2_TIME_COST"]),
        int(FAST_ARGON2["ECHO_ARGON2_MEMORY_COST"]),
        int(FAST_ARGON2["ECHO_ARGON2_PARALLELISM"]),
    )


@dataclass(frozen=True)
class TestUser:
    __test__ = False  # not a pytest test class

    username: str
    password: str
    sub: str
    id: int


def create_user(
    database: Database | str,
    *,
    username: str | None = None,
    password: str | None = None,
    admin: bool = False,
    passwords: Passwords | None = None,
) -> TestUser:
    """Create a user directly through :class:`AccountService` with a unique name and password."""
    db = Database(database) if isinstance(database, str) else database
    username = username or f"user{next(_counter)}-{secrets.token_hex(3)}"
    password = password or "pw-" + secrets.token_urlsafe(16)
    with db.session() as session:
        # Creating a user records nothing and revokes nothing: no audit trail or revokers needed.
        accounts = AccountService(
            session, passwords or fast_passwords(), audit=_NO_AUDIT, revokers=()
        )
        user = accounts.create_user(username, f"{username}@example.org", password, admin=admin)
        session.commit()
        created = TestUser(user.username, password, user.sub, user.id)
    if isinstance(database, str):
        db.dispose()
    return created


def audit_trail(settings: Settings) -> AuditTrail:
    """The audit trail an app built from ``settings`` records with (same pseudonym key)."""
    return AuditTrail(Pseudonyms.from_secret(settings.secret_key_bytes()))


def create_client(
    settings: Settings,
    name: str,
    **metadata: Any,
) -> RegisteredClient:
    """Register an OAuth client through :class:`ClientRegistry` (``metadata``: its keyword
    arguments) and record ``client.created`` as ``echo-identity clients create`` does.

    Raises ``InvalidClientMetadataError`` for metadata the registry refuses.
    """
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            registered = ClientRegistry(session, settings.secret_key_bytes()).create(
                name, **metadata
            )
            audit_trail(settings).record(
                session,
                EventType.CLIENT_CREATED,
                actor="cli",
                client_id=registered.client.client_id,
            )
            session.commit()
            session.refresh(registered.client)
            session.expunge(registered.client)
    finally:
        database.dispose()
    return registered


def record_event(settings: Settings, event_type: EventType, **fields: Any) -> None:
    """Record one audit event outside any request (``fields`` as for ``AuditTrail.record``)."""
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            audit_trail(settings).record(session, event_type, **fields)
            session.commit()
    finally:
        database.dispose()
