"""The one place tests make users, clients, audit events and other records: through the
services the application uses (``AccountService``, ``ClientRegistry``, ``AuditTrail``), never
through the command line (``tests/functional/test_cli_*.py`` test the command line itself)."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, select

from echo_identity.accounts.passwords import Passwords
from echo_identity.accounts.service import AccountService
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.idp.clients import ClientRegistry, RegisteredClient
from echo_identity.keys.kek_providers import keyring_factory
from echo_identity.vault.models import REFRESH_TOKEN, Connection, Provider
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


def store_vault_token(settings: Settings, user_id: int, token: bytes) -> int:
    """A connection of user ``user_id`` to a "github" provider (made on first use) holding
    ``token`` as its refresh token, encrypted exactly as the vault stores it; its id."""
    database = Database(settings.database_url)
    try:
        with database.transaction() as session:
            keyring = keyring_factory(settings)(session)
            provider = session.scalar(select(Provider).where(Provider.name == "github"))
            if provider is None:
                provider = Provider(
                    name="github",
                    authorize_url="https://github.example/authorize",
                    token_url="https://github.example/token",
                    client_id="github-client",
                    client_secret_ciphertext=b"",
                )
                session.add(provider)
                session.flush()
                provider.client_secret_ciphertext = keyring.encrypt(
                    "system", b"client-secret", f"provider:{provider.id}:client_secret"
                )
            connection = Connection(user_id=user_id, provider_id=provider.id)
            session.add(connection)
            session.flush()
            connection.refresh_token_ciphertext = keyring.encrypt(
                REFRESH_TOKEN.owner_for(user_id), token, REFRESH_TOKEN.context_for(connection.id)
            )
            return connection.id
    finally:
        database.dispose()


def insert_audit_events(database: Database, start: datetime, count: int) -> list[int]:
    """``count`` unsealed ``vault.token.read`` events occurring a second apart from ``start``
    (any time, past included: retention tests need old ones), inserted directly; their ids."""
    events = cast(Table, AuditEvent.__table__)
    with database.transaction() as session:
        return [
            int(
                session.execute(
                    insert(events)
                    .values(
                        occurred_at=start + timedelta(seconds=index),
                        event_type="vault.token.read",
                        outcome="success",
                        severity="info",
                        client_id="client-a",
                        ip="192.0.2.1",
                        details={"n": index},
                    )
                    .returning(events.c.id)
                ).scalar_one()
            )
            for index in range(count)
        ]
