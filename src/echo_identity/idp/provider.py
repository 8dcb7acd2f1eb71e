"""The OpenID provider as one object: Authlib's server, token minting and storage.

:class:`Provider` holds the per-app collaborators (signing keys, token issuer and verifier,
the audit trail and the Authlib server); :func:`build_provider` builds it once, at wiring
(``echo_identity.services``), and ``idp.app.init_app`` registers the grants and endpoints on
its server. Grants and endpoints reach it through their server (``self.server.provider``),
request code through ``web.context.service(Provider)``.

The Authlib persistence hooks (``query_client``, ``save_token``) live here; everything
protocol-shaped stays in Authlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import g
from sqlalchemy.orm import Session

from echo_identity.audit.events import EventType
from echo_identity.audit.service import AuditTrail
from echo_identity.cache import FreshFor
from echo_identity.clock import SYSTEM_CLOCK, Clock
from echo_identity.config import Settings
from echo_identity.crypto.digests import lookup_digest, random_token
from echo_identity.crypto.secret_formats import SecretKind, mint
from echo_identity.db import Database, utcnow
from echo_identity.idp.access_token import AccessToken
from echo_identity.idp.authlib_glue import (
    current_json_request,
    current_oauth2_request,
    json_response,
)
from echo_identity.idp.clients import ACTIVE_CLIENT, AuthlibClient, ClientRecord, client_digest_key
from echo_identity.idp.keys import KeySchedule, SigningKeys
from echo_identity.idp.models import IssuedAccessToken, RefreshToken, TokenFamily
from echo_identity.idp.owner import ResourceOwner
from echo_identity.idp.revocation import AccessTokenState
from echo_identity.idp.tokens import LEEWAY_SECONDS, AccessTokenIssuer, TokenVerifier
from echo_identity.keys.keyring import KeyringFactory
from echo_identity.web.context import RequestContext, request_context, request_session

STANDARD_SCOPES = ("openid", "profile", "email", "offline_access")
# Granted scopes that call for the audience of one of Echo's own bearer APIs (docs/oidc.md
# "Audiences"); idp/bearer.py checks the same audiences on the way in.
API_SCOPES = frozenset({"vault:read", "vault:revoke", "audit:read"})
LOG_SCOPES = frozenset({"logs:write"})


def access_token_audience(settings: Settings, client: AuthlibClient, scope: str) -> list[str]:
    """The ``aud`` of an access token minted for ``client`` with the granted ``scope``.

    A client registered with audiences (``--audience``) gets exactly those; any other gets its
    own client id plus the audience of each Echo API its scope calls for (``vault:*`` and
    ``audit:read``: the /api/v1 audience; ``logs:write``: the /log audience). Either way a
    token granted ``openid`` also names /userinfo, so the relying party can call it.
    """
    scopes = set(scope.split())
    audience = list(client.row.audiences)
    if not audience:
        audience = [client.client_id]
        if scopes & API_SCOPES:
            audience.append(settings.effective_api_audience)
        if scopes & LOG_SCOPES:
            audience.append(settings.effective_log_audience)
    if "openid" in scopes:
        audience.append(settings.effective_userinfo_audience)
    return list(dict.fromkeys(audience))


def key_schedule(settings: Settings) -> KeySchedule:
    longest = max(settings.access_token_ttl, settings.id_token_ttl)
    return KeySchedule(
        publish_ahead=timedelta(seconds=settings.key_publish_ahead),
        retention=timedelta(seconds=longest + LEEWAY_SECONDS),
    )


class TokenResponse(dict[str, Any]):
    """A token response: the JSON body the client receives (this dict) and, beside it, the
    access token it carries with its claims (:attr:`access`), so :meth:`Provider.save_token`
    records the ``jti`` and expiry it was minted with instead of parsing the JWT again."""

    def __init__(self, access: AccessToken, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.access = access


class EchoAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """Authlib's framework-free server for one :class:`Provider`, joined to Flask by
    :mod:`.authlib_glue`: grants and endpoints registered on it reach the provider as
    ``self.server.provider``."""

    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self.provider = provider

    def create_oauth2_request(self, request: object) -> OAuth2Request:
        # ``request`` is what a caller passed (None, or a request already built); Authlib's
        # own integration ignores it the same way and reads the current request.
        if isinstance(request, OAuth2Request):
            return request
        return current_oauth2_request()

    def create_json_request(self, request: object) -> object:
        return current_json_request()

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Any:
        return json_response(status, body, headers)

    def handle_error_response(self, request: object, error: OAuth2Error) -> Any:
        """Authlib's error response; the error is also kept for the request
        (:func:`refused_with`), so the view that audits a refusal names the error Authlib
        decided on without parsing its own response."""
        g.oauth2_error = error
        return super().handle_error_response(request, error)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Authlib's hook for framework signals: Echo subscribes to none."""

    def query_client(self, client_id: str) -> AuthlibClient | None:
        return self.provider.client(client_id)

    def save_token(self, token: TokenResponse, request: OAuth2Request) -> None:
        self.provider.save_token(token, request)


def refused_with() -> OAuth2Error | None:
    """The protocol error the provider answered the current request with, if any."""
    error: OAuth2Error | None = g.get("oauth2_error")
    return error


class EchoIssuerParameter(IssuerParameter):  # type: ignore[misc]
    """RFC 9207: ``iss`` in every authorization response, errors included."""

    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def get_issuer(self) -> str:
        return self._issuer


@dataclass
class Provider:
    settings: Settings
    database: Database
    keys: SigningKeys
    access_tokens: AccessTokenIssuer
    verifier: TokenVerifier
    audit: AuditTrail
    clock: Clock = SYSTEM_CLOCK
    server: EchoAuthorizationServer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.server = EchoAuthorizationServer(self)
        self.server.register_token_generator("default", self.generate_token)
        self.server.register_extension(EchoIssuerParameter(self.settings.issuer))

    @cached_property
    def _client_digest_key(self) -> bytes:
        return client_digest_key(self.settings.secret_key_bytes())

    @cached_property
    def clients(self) -> FreshFor[AuthlibClient]:
        """Enabled clients by id as :meth:`client` last read them, each for at most a second
        (``echo_identity.cache``: how a change reaches every worker)."""
        return FreshFor(self.clock)

    @cached_property
    def token_state(self) -> AccessTokenState:
        """Whether a verified access token is revoked or its client disabled (``/verify``,
        ``/introspect``, the bearer APIs)."""
        return AccessTokenState(self.database, self.client, self.clock)

    def client(self, client_id: str | None) -> AuthlibClient | None:
        """The enabled client ``client_id`` wrapped for Authlib, or ``None`` (no id given, or
        unknown, or disabled).

        Served from :attr:`clients`: a client disabled or given a new secret anywhere is
        refused by this process at most a second later (immediately after
        ``clients.forget(client_id)``). A miss is one Core query on this thread's read
        connection (``Database.read_row``), outside the request's transaction; an unknown id
        is never kept, so guessed ids cannot fill the cache.
        """
        if not client_id:
            return None
        return self.clients.get(client_id, self._read_client)

    def _read_client(self, client_id: str) -> AuthlibClient | None:
        row = self.database.read_row(ACTIVE_CLIENT, {"client_id": client_id})
        if row is None:
            return None
        return AuthlibClient(ClientRecord.from_mapping(row), self._client_digest_key)

    def vault_providers_of(self, client_id: str) -> tuple[str, ...]:
        """The vault providers the enabled client ``client_id`` is registered for (none for
        an unknown or disabled client), from the client cache."""
        client = self.client(client_id)
        return client.row.vault_providers if client is not None else ()

    def refresh_allowed(self, client: AuthlibClient, scope: str) -> bool:
        """Refresh tokens need the grant type, and ``offline_access`` for public clients."""
        if not client.check_grant_type("refresh_token"):
            return False
        return client.confidential or "offline_access" in scope.split()

    def generate_token(
        self,
        grant_type: str,
        client: AuthlibClient,
        user: ResourceOwner | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> TokenResponse:
        """Authlib's token generator: a signed access token for ``client`` (issued to ``user``,
        else to the client itself) and, when :meth:`refresh_allowed`, a refresh token."""
        scope = scope or ""
        access = self.access_tokens.issue(
            client_id=client.client_id,
            subject=user.user.sub if user else client.client_id,
            audience=access_token_audience(self.settings, client, scope),
            scope=scope,
            auth_time=user.auth_time if user else None,
        )
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": access.token,
            "expires_in": self.access_tokens.ttl,
            "scope": scope,
        }
        if include_refresh_token and user is not None and self.refresh_allowed(client, scope):
            body["refresh_token"] = mint(SecretKind.REFRESH_TOKEN)
        return TokenResponse(access, body)

    def save_token(self, token: TokenResponse, request: OAuth2Request) -> None:
        """Authlib's hook: :meth:`store_token` on the request's session. The token endpoint
        commits it, once, with whatever else the request changed (the code or refresh token
        it claimed)."""
        self.store_token(request_session(), token, request, request_context())

    def store_token(
        self,
        session: Session,
        token: TokenResponse,
        request: OAuth2Request,
        context: RequestContext,
    ) -> None:
        """Add what later decisions need of ``token`` to ``session`` and record it (flushed,
        not committed).

        A code exchange starts a token family (absolute lifetime
        ``ECHO_REFRESH_TOKEN_ABSOLUTE_TTL``) and ties the code to it; a refresh continues the
        family of the refresh token it rotated. Within a family, the access token's ``jti`` and
        expiry are kept (so revoking the family revokes it) and a refresh token is kept as its
        digest only, never in clear. A client-credentials token belongs to no family.
        """
        client: AuthlibClient = request.client
        owner: ResourceOwner | None = request.user
        grant_type = request.payload.grant_type
        now = utcnow()
        family_id: str | None = None
        if grant_type == "authorization_code":
            code = request.authorization_code
            family = TokenFamily(
                id=random_token(16)[:22],
                client_id=client.client_id,
                user_id=owner.user.id if owner else None,
                scope=token.get("scope", ""),
                auth_time=code.auth_time,
                created_at=now,
                expires_at=now + timedelta(seconds=self.settings.refresh_token_absolute_ttl),
            )
            session.add(family)
            session.flush()
            code.family_id = family.id
            family_id = family.id
        elif grant_type == "refresh_token":
            family_id = request.refresh_token.family_id
        if family_id is not None:
            session.add(
                IssuedAccessToken(
                    jti=token.access.jti,
                    family_id=family_id,
                    expires_at=datetime.fromtimestamp(token.access.expires_at, UTC),
                )
            )
            if "refresh_token" in token:
                family_row = session.get(TokenFamily, family_id)
                assert family_row is not None
                idle = now + timedelta(seconds=self.settings.refresh_token_idle_ttl)
                session.add(
                    RefreshToken(
                        token_digest=lookup_digest(token["refresh_token"]),
                        family_id=family_id,
                        client_id=client.client_id,
                        scope=token.get("scope", ""),
                        issued_at=now,
                        expires_at=min(idle, family_row.expires_at),
                    )
                )
        # A code exchange or refresh records its event with the code or token it claimed; a
        # client-credentials token changed nothing else and shares a group commit.
        self.audit.record_or_write(
            session,
            EventType.TOKEN_REFRESHED if grant_type == "refresh_token" else EventType.TOKEN_ISSUED,
            context=context,
            client_id=client.client_id,
            user=owner.user.sub if owner else None,
            token=token["access_token"],
            details={"grant_type": grant_type, "scope": token.get("scope", "")},
        )
        if session.in_transaction():
            session.flush()


def build_provider(
    settings: Settings,
    database: Database,
    keyrings: KeyringFactory,
    audit: AuditTrail,
    clock: Clock = SYSTEM_CLOCK,
) -> Provider:
    """The provider for ``settings`` on ``database``: signing keys protected by ``keyrings``
    and scheduled by ``clock``, token events recorded through ``audit``. Connects to nothing
    yet."""
    keys = SigningKeys(database, keyrings, key_schedule(settings), clock)
    return Provider(
        settings=settings,
        database=database,
        keys=keys,
        access_tokens=AccessTokenIssuer(keys, settings.issuer, settings.access_token_ttl),
        verifier=TokenVerifier(keys, settings.issuer),
        audit=audit,
        clock=clock,
    )
