"""The one wiring point: :class:`Services`, every collaborator of the application built once
from validated settings.

``create_app`` builds it and attaches it to the Flask app (request code asks for one
collaborator by type: ``web.context.service(Provider)``); the worker and the CLI build it with
the same :func:`build_services` and pass what they need down explicitly. Nothing below this
module imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import redis

from echo_identity.accounts.passwords import Passwords
from echo_identity.accounts.service import Accounts
from echo_identity.accounts.sessions import (
    RedisSessionStore,
    SessionPolicy,
    SessionStore,
    SqlSessionStore,
)
from echo_identity.audit.keys import AuditSigner
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail
from echo_identity.audit.writer import AuditWriter
from echo_identity.clock import SYSTEM_CLOCK, Clock
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.idp.credentials import revoke_user_grants
from echo_identity.idp.provider import Provider, build_provider
from echo_identity.keys.kek_providers import keyring_factory
from echo_identity.keys.keyring import KeyringFactory
from echo_identity.vault.runtime import VaultRuntime, build_runtime
from echo_identity.web.health import Readiness, readiness_for


@dataclass(frozen=True)
class Services:
    """Everything the application's code is handed; one instance per app, worker or command."""

    settings: Settings
    clock: Clock
    database: Database
    keyrings: KeyringFactory
    passwords: Passwords
    accounts: Accounts
    sessions: SessionStore
    pseudonyms: Pseudonyms
    audit: AuditTrail
    audit_signer: AuditSigner
    provider: Provider
    vault: VaultRuntime
    readiness: Readiness


def build_services(
    settings: Settings, database: Database | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> Services:
    """Build every collaborator for ``settings`` (on ``database`` when given, else on
    ``ECHO_DATABASE_URL``; time from ``clock``, which tests move). Connects to nothing yet:
    engines and Redis clients are lazy."""
    database = database or Database(settings.database_url)
    keyrings = keyring_factory(settings)
    pseudonyms = Pseudonyms.from_secret(settings.secret_key_bytes())
    audit = AuditTrail(pseudonyms, AuditWriter(database, pseudonyms))
    passwords = Passwords(
        settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism
    )
    provider = build_provider(settings, database, keyrings, audit, clock)
    return Services(
        settings=settings,
        clock=clock,
        database=database,
        keyrings=keyrings,
        passwords=passwords,
        # A user's credentials dying (disable, password change) also ends the provider's
        # codes and token families: idp plugs its part into accounts here, from above.
        accounts=Accounts(passwords, audit, revokers=(revoke_user_grants,)),
        sessions=session_store(settings, database),
        pseudonyms=pseudonyms,
        audit=audit,
        audit_signer=AuditSigner(keyrings),
        provider=provider,
        vault=build_runtime(settings, keyrings, audit, clock, provider.vault_providers_of),
        readiness=readiness_for(settings, database),
    )


def session_store(settings: Settings, database: Database) -> SessionStore:
    """Redis when ``ECHO_REDIS_URL`` is set, otherwise the database."""
    policy = SessionPolicy(
        idle=timedelta(seconds=settings.session_idle_timeout),
        absolute=timedelta(seconds=settings.session_absolute_timeout),
    )
    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url)
        return RedisSessionStore(client, policy, prefix=settings.redis_namespace)
    return SqlSessionStore(database, policy)
