"""The token vault: connecting providers, handing out fresh tokens, refreshing, disconnecting.

Concurrency (the anchors' top complaint): a refresh happens under a row lock —
``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite — and the row is re-read
after the lock is taken, so concurrent callers for one connection cause exactly one refresh at
the provider and all receive the new token. A rotated refresh token is committed in the same
transaction as the new access token, before either is handed out; a response without a new
refresh token keeps the old one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.service import record
from echo_identity.db import utcnow
from echo_identity.vault.consents import VaultConsents
from echo_identity.vault.errors import (
    ConnectionNotFoundError,
    NeedsReauthError,
    UpstreamError,
    UpstreamInvalidGrantError,
)
from echo_identity.vault.keyring import Keyring
from echo_identity.vault.models import Connection, Provider
from echo_identity.vault.providers import ProviderRegistry
from echo_identity.vault.upstream import Upstream, UpstreamToken
from echo_identity.web.context import NO_REQUEST, RequestContext

REFRESH_WITHOUT_EXPIRY = timedelta(hours=24)


def owner_of(user_id: int) -> str:
    return f"user:{user_id}"


def token_context(connection_id: int, field: str) -> str:
    return f"connection:{connection_id}:{field}"


def pkce_verifier(state: str, key: bytes) -> str:
    """The PKCE verifier of a connect attempt, derived from its state so it is never stored."""
    digest = hmac.new(key, state.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class FreshToken:
    access_token: str
    token_type: str
    expires_at: datetime | None
    scope: str
    refreshed: bool


class VaultService:
    """Vault operations in one database session; each public method commits its own work."""

    def __init__(
        self,
        session: Session,
        keyring: Keyring,
        upstream: Upstream,
        *,
        refresh_window: timedelta,
        pkce_key: bytes,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._upstream = upstream
        self._window = refresh_window
        self._pkce_key = pkce_key
        self._clock = clock
        self.providers = ProviderRegistry(session, keyring)
        self.consents = VaultConsents(session, clock)

    # --- connect flow -----------------------------------------------------------------------

    def authorization_url(self, provider: Provider, state: str, redirect_uri: str) -> str:
        """Where to send the user: the provider's authorization endpoint with state and PKCE."""
        params = {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": create_s256_code_challenge(pkce_verifier(state, self._pkce_key)),
            "code_challenge_method": "S256",
            **provider.authorize_params,
        }
        if provider.scope:
            params["scope"] = provider.scope
        separator = "&" if "?" in provider.authorize_url else "?"
        return provider.authorize_url + separator + urlencode(params)

    def complete_connect(
        self,
        user: User,
        provider: Provider,
        code: str,
        state: str,
        redirect_uri: str,
        context: RequestContext = NO_REQUEST,
        client_ids: Sequence[str] = (),
    ) -> Connection:
        """Exchange the code and store the tokens (replacing an earlier connection), and record
        a fresh consent naming the services ``client_ids`` (those the consent page showed);
        commits.

        Raises :class:`UpstreamError` when the provider refuses or fails.
        """
        token = self._upstream.exchange_code(
            provider.token_url,
            self.providers.credentials(provider),
            code,
            redirect_uri,
            pkce_verifier(state, self._pkce_key),
        )
        connection = self._find(user.id, provider.id)
        if connection is None:
            connection = Connection(user_id=user.id, provider_id=provider.id)
            self._session.add(connection)
            self._session.flush()
        connection.refresh_token_ciphertext = None  # a reconnect starts from the new grant
        self._store(connection, token)
        scope = connection.scope or provider.scope
        consent = self.consents.grant(user, provider.name, scope, client_ids)
        record(
            self._session,
            EventType.VAULT_CONNECTION_CREATED,
            context=context,
            user=user.sub,
            token=token.access_token,
            details={"provider": provider.name, "scope": scope, "services": consent.client_ids},
        )
        self._session.commit()
        return connection

    # --- reading ----------------------------------------------------------------------------

    def connections(self, user_id: int) -> list[tuple[Connection, Provider]]:
        """The user's connections with their providers (metadata; nothing is decrypted)."""
        rows = self._session.execute(
            select(Connection, Provider)
            .join(Provider, Provider.id == Connection.provider_id)
            .where(Connection.user_id == user_id)
            .order_by(Provider.name)
        ).all()
        return [(row[0], row[1]) for row in rows]

    def require_connection(self, user_id: int, provider: Provider) -> Connection:
        connection = self._find(user_id, provider.id)
        if connection is None or connection.access_token_ciphertext is None:
            raise ConnectionNotFoundError()
        return connection

    def fresh_token(
        self,
        user: User,
        provider: Provider,
        *,
        min_ttl: int = 60,
        force: bool = False,
        context: RequestContext = NO_REQUEST,
        client_id: str | None = None,
    ) -> FreshToken:
        """An access token valid for at least ``min_ttl`` seconds, refreshing first if needed.

        Raises :class:`ConnectionNotFoundError`, :class:`NeedsReauthError` (the provider refused
        the refresh, or the token expired and cannot be refreshed) or :class:`UpstreamError`
        (the provider failed and the stored token has expired).
        """
        started = self._clock()
        connection = self.require_connection(user.id, provider)
        if connection.status == "needs_reauth":
            raise NeedsReauthError()
        if not force and not self._expiring(connection, min_ttl):
            return self._read(connection, refreshed=False)
        self._session.commit()  # end the read transaction: the lock must be taken at BEGIN
        connection = self._lock(user.id, provider.id)
        already = (
            connection.last_refreshed_at is not None and connection.last_refreshed_at >= started
        )
        if connection.status == "needs_reauth":
            self._session.commit()
            raise NeedsReauthError()
        if (force and already) or (not force and not self._expiring(connection, min_ttl)):
            token = self._read(connection, refreshed=already)  # someone refreshed meanwhile
            self._session.commit()
            return token
        return self._refresh_locked(user, provider, connection, context, client_id)

    def refresh_connection(self, connection_id: int, context: RequestContext = NO_REQUEST) -> bool:
        """Refresh one connection under its lock if it is still due (the worker's path).

        Returns True when a refresh happened. Provider failures are recorded, not raised.
        """
        row = self._session.execute(
            select(Connection, Provider, User)
            .join(Provider, Provider.id == Connection.provider_id)
            .join(User, User.id == Connection.user_id)
            .where(Connection.id == connection_id)
        ).first()
        self._session.commit()
        if row is None:
            return False
        connection, provider, user = row[0], row[1], row[2]
        connection = self._lock(user.id, provider.id)
        due = connection.refresh_due_at is not None and connection.refresh_due_at <= self._clock()
        if not due or connection.status != "active" or connection.refresh_token_ciphertext is None:
            self._session.commit()
            return False
        try:
            self._refresh_locked(user, provider, connection, context, "worker")
        except (UpstreamError, NeedsReauthError):
            return False
        return True

    # --- disconnect -------------------------------------------------------------------------

    def disconnect(
        self,
        user: User,
        provider: Provider,
        context: RequestContext = NO_REQUEST,
        client_id: str | None = None,
    ) -> None:
        """Revoke at the provider (RFC 7009, when it has a revocation endpoint), then delete.

        If the provider refuses or fails, nothing is deleted and :class:`UpstreamError` is
        raised, so the disconnect can be retried.
        """
        connection = self._find(user.id, provider.id)
        if connection is None:
            raise ConnectionNotFoundError()
        if provider.revocation_url:
            credentials = self.providers.credentials(provider)
            for field, hint in (
                ("refresh_token", "refresh_token"),
                ("access_token", "access_token"),
            ):
                ciphertext = getattr(connection, f"{field}_ciphertext")
                if ciphertext is not None:
                    secret = self._keyring.decrypt(ciphertext, token_context(connection.id, field))
                    self._upstream.revoke(
                        provider.revocation_url, credentials, secret.decode(), hint
                    )
        self.consents.withdraw(user.id, provider.name)
        self._session.delete(connection)
        record(
            self._session,
            EventType.VAULT_CONNECTION_REVOKED,
            context=context,
            user=user.sub,
            client_id=client_id,
            details={"provider": provider.name},
        )
        self._session.commit()

    # --- internals --------------------------------------------------------------------------

    def _find(self, user_id: int, provider_id: int) -> Connection | None:
        return self._session.scalar(
            select(Connection).where(
                Connection.user_id == user_id, Connection.provider_id == provider_id
            )
        )

    def _lock(self, user_id: int, provider_id: int) -> Connection:
        """Begin a transaction holding the connection's write lock, and re-read the row."""
        self._session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
        connection = self._session.scalar(
            select(Connection)
            .where(Connection.user_id == user_id, Connection.provider_id == provider_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if connection is None:
            self._session.rollback()
            raise ConnectionNotFoundError()
        return connection

    def _expiring(self, connection: Connection, min_ttl: int) -> bool:
        now = self._clock()
        if connection.expires_at is None:
            return connection.refresh_due_at is not None and connection.refresh_due_at <= now
        return connection.expires_at - now < timedelta(seconds=min_ttl)

    def _read(self, connection: Connection, *, refreshed: bool) -> FreshToken:
        assert connection.access_token_ciphertext is not None
        access = self._keyring.decrypt(
            connection.access_token_ciphertext, token_context(connection.id, "access_token")
        )
        return FreshToken(
            access.decode(),
            connection.token_type,
            connection.expires_at,
            connection.scope,
            refreshed,
        )

    def _store(self, connection: Connection, token: UpstreamToken) -> None:
        now = self._clock()
        owner = owner_of(connection.user_id)
        connection.access_token_ciphertext = self._keyring.encrypt(
            owner, token.access_token.encode(), token_context(connection.id, "access_token")
        )
        if token.refresh_token is not None:  # rotated by the provider; otherwise keep ours
            connection.refresh_token_ciphertext = self._keyring.encrypt(
                owner, token.refresh_token.encode(), token_context(connection.id, "refresh_token")
            )
        connection.token_type = token.token_type
        if token.scope is not None:
            connection.scope = " ".join(token.scope.replace(",", " ").split())
        if token.expires_in is not None:
            connection.expires_at = now + timedelta(seconds=token.expires_in)
            connection.refresh_due_at = connection.expires_at - self._window
        else:
            connection.expires_at = None
            connection.refresh_due_at = now + REFRESH_WITHOUT_EXPIRY
        connection.last_refreshed_at = now
        connection.status = "active"
        connection.refresh_failures = 0

    def _refresh_locked(
        self,
        user: User,
        provider: Provider,
        connection: Connection,
        context: RequestContext,
        client_id: str | None,
    ) -> FreshToken:
        """Refresh while holding the row lock; commits (releasing it) on every path."""
        details = {"provider": provider.name}
        if connection.refresh_token_ciphertext is None:
            self._session.commit()
            if connection.expires_at is not None and connection.expires_at > self._clock():
                return self._read(connection, refreshed=False)
            raise NeedsReauthError("The token expired and the provider gave no refresh token.")
        refresh_token = self._keyring.decrypt(
            connection.refresh_token_ciphertext, token_context(connection.id, "refresh_token")
        ).decode()

        def record_failure(severity: Severity, error: str, token: str | None = None) -> None:
            connection.refresh_failures += 1
            record(
                self._session,
                EventType.VAULT_REFRESH_FAILED,
                context=context,
                outcome="failure",
                severity=severity,
                user=user.sub,
                client_id=client_id,
                token=token,
                details={**details, "error": error},
            )
            self._session.commit()

        try:
            token = self._upstream.refresh(
                provider.token_url, self.providers.credentials(provider), refresh_token
            )
        except UpstreamInvalidGrantError:
            connection.status = "needs_reauth"
            record_failure(Severity.HIGH, "invalid_grant", refresh_token)
            raise NeedsReauthError() from None
        except UpstreamError:
            record_failure(Severity.WARNING, "upstream_unavailable")
            if connection.expires_at is not None and connection.expires_at > self._clock():
                return self._read(connection, refreshed=False)  # keep the old, still valid one
            raise
        self._store(connection, token)
        record(
            self._session,
            EventType.VAULT_TOKEN_REFRESHED,
            context=context,
            user=user.sub,
            client_id=client_id,
            token=token.access_token,
            details=details,
        )
        self._session.commit()  # the rotated refresh token is durable before anyone sees it
        return FreshToken(
            token.access_token,
            connection.token_type,
            connection.expires_at,
            connection.scope,
            True,
        )
