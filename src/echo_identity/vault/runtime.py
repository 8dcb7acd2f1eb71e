"""Per-app vault collaborators, and the request-scoped :class:`VaultService` built from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

from flask import Flask, current_app
from sqlalchemy.orm import Session

from echo_identity.audit.keys import AuditSigner
from echo_identity.config import Settings
from echo_identity.crypto.digests import derive_key
from echo_identity.db import request_session
from echo_identity.idp.provider import keyring_factory
from echo_identity.vault.keyring import Keyring
from echo_identity.vault.service import VaultService
from echo_identity.vault.upstream import Upstream
from echo_identity.web.rate_limits import api_limit, limiter


@dataclass
class VaultRuntime:
    settings: Settings
    keyring_for: Callable[[Session], Keyring]
    upstream: Upstream

    def service(self, session: Session) -> VaultService:
        return VaultService(
            session,
            self.keyring_for(session),
            self.upstream,
            refresh_window=timedelta(seconds=self.settings.vault_refresh_window),
            pkce_key=derive_key(self.settings.secret_key_bytes(), "vault-pkce"),
        )

    @cached_property
    def audit_signer(self) -> AuditSigner:
        """Signs the audit checkpoints each worker pass writes (see ``audit.sealer``)."""
        return AuditSigner(self.keyring_for)

    @property
    def callback_url(self) -> str:
        return self.settings.issuer.rstrip("/") + "/connections/callback"


def build_runtime(settings: Settings) -> VaultRuntime:
    return VaultRuntime(settings, keyring_factory(settings), Upstream())


def init_app(app: Flask, settings: Settings) -> VaultRuntime:
    from echo_identity.vault import api, views

    runtime = build_runtime(settings)
    app.extensions["echo.vault"] = runtime
    app.register_blueprint(views.bp)
    limiter.limit(api_limit)(api.bp)  # every /api/v1 call, per client IP
    app.register_blueprint(api.bp)
    return runtime


def current_vault() -> VaultService:
    """The vault service bound to this request's database session."""
    runtime: VaultRuntime = current_app.extensions["echo.vault"]
    return runtime.service(request_session())


def current_runtime() -> VaultRuntime:
    runtime: VaultRuntime = current_app.extensions["echo.vault"]
    return runtime
