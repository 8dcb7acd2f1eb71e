"""The token vault: connecting providers, handing out fresh tokens, refreshing, disconnecting.

Concurrency (the anchors' top complaint): a refresh happens under a row lock —
``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite — and the row is re-read
after the lock is taken, so concurrent callers for one connection cause exactly one refresh at
the provider and all receive the new token. A rotated refresh token is committed in the same
transaction as the new access token, before either is handed out; a response without a new
refresh token keeps the old one.

Commits: every method flushes only, and the caller commits its unit of work (the request once,
a worker job once per connection), except the locked refresh (:meth:`VaultService._locked`),
which is a transaction of its own: see there why.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from urllib.parse import urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.service import AuditTrail
from echo_identity.cache import FreshFor
from echo_identity.db import utcnow
from echo_identity.keys.keyring import Keyring
from echo_identity.vault.access import VaultAccess
from echo_identity.vault.consents import VaultConsents
from echo_identity.vault.errors import (
    ConnectionNotFoundError,
    NeedsReauthError,
    UpstreamError,
    UpstreamInvalidGrantError,
    VaultError,
)
from echo_identity.vault.models import ACCESS_TOKEN, REFRESH_TOKEN, Connection, Provider
from echo_identity.vault.providers import ProviderRegistry, ProviderSettings
from echo_identity.vault.token_store import (
    FreshToken,
    expiring,
    read_access_token,
    read_refresh_token,
    store_tokens,
)
from echo_identity.vault.upstream import Upstream, UpstreamToken
from echo_identity.web.context import NO_REQUEST, RequestContext


def pkce_verifier(state: str, key: bytes) -> str:
    """The PKCE verifier of a connect attempt, derived from its state so it is never stored."""
    digest = hmac.new(key, state.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# A constant statement (compiled once): every hand-out looks its connection up.
_CONNECTION = select(Connection).where(
    Connection.user_id == bindparam("user_id"), Connection.provider_id == bindparam("provider_id")
)


class VaultService:
    """Vault operations in one database session; methods flush, the caller commits (except
    the locked refresh, see :meth:`_locked`)."""

    def __init__(
        self,
        session: Session,
        keyring: Keyring,
        upstream: Upstream,
        audit: AuditTrail,
        *,
        refresh_window: timedelta,
        pkce_key: bytes,
        clock: Callable[[], datetime] = utcnow,
        provider_settings: FreshFor[ProviderSettings] | None = None,
        registered_providers: Callable[[str], Collection[str]] | None = None,
    ) -> None:
        """``provider_settings``: the app's cache of provider settings (``VaultRuntime``);
        ``registered_providers``: the providers a client is registered for, from the app's
        client cache. ``None`` reads either from the database every time."""
        self._session = session
        self._keyring = keyring
        self._upstream = upstream
        self._audit = audit
        self._window = refresh_window
        self._pkce_key = pkce_key
        self._clock = clock
        self.providers = ProviderRegistry(session, keyring, provider_settings)
        self.consents = VaultConsents(session, clock)
        self.access = VaultAccess(session, self.consents, registered_providers)

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
        a fresh consent naming the services ``client_ids`` (those the consent page showed) and
        ``vault.connection.created``; flushes, the caller commits.

        Raises :class:`UpstreamError` when the provider refuses or fails (nothing is written).
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
        self._audit.record(
            self._session,
            EventType.VAULT_CONNECTION_CREATED,
            context=context,
            user=user.sub,
            token=token.access_token,
            details={"provider": provider.name, "scope": scope, "services": consent.client_ids},
        )
        self._session.flush()
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
        """The user's connection to ``provider`` holding a token; raises
        :class:`ConnectionNotFoundError`."""
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

        A token that is still good is read without writing anything (the caller commits its
        own audit event); a refresh is committed before this returns (see :meth:`_locked`).

        Raises :class:`ConnectionNotFoundError`, :class:`NeedsReauthError` (the provider refused
        the refresh, or the token expired and cannot be refreshed), :class:`UpstreamError`
        (the provider failed and the stored token has expired), or
        :class:`~echo_identity.crypto.aead.DecryptionError` (a stored token does not decrypt).
        """
        started = self._clock()
        connection = self.require_connection(user.id, provider)
        if connection.status == "needs_reauth":
            raise NeedsReauthError()
        if not force and not expiring(connection, min_ttl, self._clock()):
            return self._read(connection, refreshed=False)
        with self._locked(user.id, provider.id) as connection:
            now = self._clock()
            already = (
                connection.last_refreshed_at is not None and connection.last_refreshed_at >= started
            )
            if connection.status == "needs_reauth":
                raise NeedsReauthError()
            if (force and already) or (not force and not expiring(connection, min_ttl, now)):
                return self._read(connection, refreshed=already)  # someone refreshed meanwhile
            return self._refresh_locked(user, provider, connection, context, client_id)

    def refresh_connection(self, connection_id: int, context: RequestContext = NO_REQUEST) -> bool:
        """Refresh one connection under its lock if it is still due (the worker's path); the
        refresh, or the failure it recorded, is committed before this returns.

        Returns True when a refresh happened, False when the connection is gone, no longer due
        or the provider refused or failed (recorded, not raised). Raises
        :class:`ConnectionNotFoundError` when the connection was deleted meanwhile, and
        :class:`~echo_identity.crypto.aead.DecryptionError` for a stored token that does not
        decrypt (rolled back).
        """
        row = self._session.execute(
            select(Connection, Provider, User)
            .join(Provider, Provider.id == Connection.provider_id)
            .join(User, User.id == Connection.user_id)
            .where(Connection.id == connection_id)
        ).first()
        if row is None:
            return False
        provider, user = row[1], row[2]
        try:
            with self._locked(user.id, provider.id) as connection:
                due = (
                    connection.refresh_due_at is not None
                    and connection.refresh_due_at <= self._clock()
                )
                if (
                    not due
                    or connection.status != "active"
                    or connection.refresh_token_ciphertext is None
                ):
                    return False
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
        """Revoke at the provider (RFC 7009, when it has a revocation endpoint), then delete
        the connection, withdraw the consent and record ``vault.connection.revoked``; flushes,
        the caller commits.

        Raises :class:`ConnectionNotFoundError`; if the provider refuses or fails, nothing is
        written and :class:`UpstreamError` is raised, so the disconnect can be retried.
        """
        connection = self._find(user.id, provider.id)
        if connection is None:
            raise ConnectionNotFoundError()
        if provider.revocation_url:
            credentials = self.providers.credentials(provider)
            for column, hint in ((REFRESH_TOKEN, "refresh_token"), (ACCESS_TOKEN, "access_token")):
                ciphertext = getattr(connection, column.column.key)
                if ciphertext is not None:
                    secret = self._keyring.decrypt(ciphertext, column.context_for(connection.id))
                    self._upstream.revoke(
                        provider.revocation_url, credentials, secret.decode(), hint
                    )
        self.consents.withdraw(user.id, provider.name)
        self._session.delete(connection)
        self._audit.record(
            self._session,
            EventType.VAULT_CONNECTION_REVOKED,
            context=context,
            user=user.sub,
            client_id=client_id,
            details={"provider": provider.name},
        )
        self._session.flush()

    # --- internals --------------------------------------------------------------------------

    def _find(self, user_id: int, provider_id: int) -> Connection | None:
        return self._session.scalar(_CONNECTION, {"user_id": user_id, "provider_id": provider_id})

    @contextmanager
    def _locked(self, user_id: int, provider_id: int) -> Iterator[Connection]:
        """The connection re-read under its write lock, in a transaction of its own.

        Why this commits, unlike the rest of the service: the lock is taken when a transaction
        begins, so the caller's read transaction is ended first; and a refresh at the provider
        usually *rotates* the refresh token (the old one dies), so the new one must be durable
        before anything else can fail — a token handed out, an audit event, the response.
        Otherwise the connection would keep a dead refresh token and need re-consent. So the
        transaction is committed when the block ends, also when it raises a
        :class:`VaultError` (the needs-reauth status and the failure the block recorded are
        kept); any other exception rolls it back.

        Raises :class:`ConnectionNotFoundError` when the connection is gone.
        """
        self._session.commit()  # end the read transaction: the lock is taken at BEGIN
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
        try:
            yield connection
        except VaultError:
            self._session.commit()
            raise
        except BaseException:
            self._session.rollback()
            raise
        self._session.commit()

    def _read(self, connection: Connection, *, refreshed: bool) -> FreshToken:
        return read_access_token(self._keyring, connection, refreshed=refreshed)

    def _store(self, connection: Connection, token: UpstreamToken) -> None:
        store_tokens(
            self._keyring, connection, token, now=self._clock(), refresh_window=self._window
        )

    def _refresh_locked(
        self,
        user: User,
        provider: Provider,
        connection: Connection,
        context: RequestContext,
        client_id: str | None,
    ) -> FreshToken:
        """Refresh inside :meth:`_locked` (which commits what this writes).

        Raises :class:`NeedsReauthError` (the provider refused the grant: the connection is
        marked, the failure recorded; or the token expired and there is no refresh token) and
        :class:`UpstreamError` (the provider failed and the stored token has expired).
        """
        details = {"provider": provider.name}
        refresh_token = read_refresh_token(self._keyring, connection)
        if refresh_token is None:
            if connection.expires_at is not None and connection.expires_at > self._clock():
                return self._read(connection, refreshed=False)
            raise NeedsReauthError("The token expired and the provider gave no refresh token.")

        def record_failure(severity: Severity, error: str, token: str | None = None) -> None:
            connection.refresh_failures += 1
            self._audit.record(
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
        self._audit.record(
            self._session,
            EventType.VAULT_TOKEN_REFRESHED,
            context=context,
            user=user.sub,
            client_id=client_id,
            token=token.access_token,
            details=details,
        )
        return FreshToken(
            token.access_token,
            connection.token_type,
            connection.expires_at,
            connection.scope,
            True,
        )
