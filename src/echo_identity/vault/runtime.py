"""The vault's per-app collaborators (:class:`VaultRuntime`, built once by the wiring point,
``echo_identity.services``), and the :class:`VaultService` they make for one database session.

Request code reaches it as ``web.context.service(VaultRuntime)``; worker jobs are handed it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from echo_identity.audit.service import AuditTrail
from echo_identity.cache import FreshFor
from echo_identity.clock import SYSTEM_CLOCK, Clock
from echo_identity.config import Settings
from echo_identity.crypto.digests import derive_key
from echo_identity.db import utcnow
from echo_identity.keys.keyring import KeyringFactory
from echo_identity.vault.providers import ProviderSettings
from echo_identity.vault.service import VaultService
from echo_identity.vault.upstream import Upstream


@dataclass(frozen=True)
class VaultRuntime:
    """Everything a :class:`VaultService` needs besides its session; settings already turned
    into values (``callback_url`` is where providers send users back to)."""

    keyring_for: KeyringFactory
    upstream: Upstream
    audit: AuditTrail
    refresh_window: timedelta
    pkce_key: bytes
    callback_url: str
    clock: Callable[[], datetime] = utcnow
    # Providers' settings as last read, each for at most a second (``echo_identity.cache``).
    provider_settings: FreshFor[ProviderSettings] = field(default_factory=FreshFor)
    # The providers a client is registered for (from the provider's client cache); None: read
    # from the database.
    registered_providers: Callable[[str], Collection[str]] | None = None

    def service(self, session: Session) -> VaultService:
        """The vault service on ``session`` (the caller commits; see ``vault.service``)."""
        return VaultService(
            session,
            self.keyring_for(session),
            self.upstream,
            self.audit,
            refresh_window=self.refresh_window,
            pkce_key=self.pkce_key,
            clock=self.clock,
            provider_settings=self.provider_settings,
            registered_providers=self.registered_providers,
        )


def build_runtime(
    settings: Settings,
    keyring_for: KeyringFactory,
    audit: AuditTrail,
    clock: Clock = SYSTEM_CLOCK,
    registered_providers: Callable[[str], Collection[str]] | None = None,
) -> VaultRuntime:
    """The vault's collaborators for ``settings`` (called by the wiring point only)."""
    return VaultRuntime(
        clock=clock.now,
        keyring_for=keyring_for,
        upstream=Upstream(),
        audit=audit,
        refresh_window=timedelta(seconds=settings.vault_refresh_window),
        pkce_key=derive_key(settings.secret_key_bytes(), "vault-pkce"),
        callback_url=settings.issuer.rstrip("/") + "/connections/callback",
        provider_settings=FreshFor(clock),
        registered_providers=registered_providers,
    )
