"""Wiring of the OpenID provider: Authlib's server, our grants, token minting and storage.

:class:`Provider` holds the per-app collaborators (signing keys, token issuer and verifier,
the Authlib server). The Authlib persistence hooks (``query_client``, ``save_token``) live
here; everything protocol-shaped stays in Authlib.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import Flask
from sqlalchemy.orm import Session

from echo_identity.audit.events import EventType
from echo_identity.audit.service import record
from echo_identity.config import Settings
from echo_identity.crypto.digests import lookup_digest, random_token
from echo_identity.crypto.secret_formats import SecretKind, mint
from echo_identity.db import Database, current_database, request_session, utcnow
from echo_identity.idp.clients import (
    ACTIVE_CLIENT,
    AuthlibClient,
    ClientRecord,
    ClientRegistry,
    client_digest_key,
)
from echo_identity.idp.keys import KeySchedule, SigningKeys
from echo_identity.idp.models import IssuedAccessToken, RefreshToken, TokenFamily
from echo_identity.idp.owner import ResourceOwner
from echo_identity.idp.tokens import LEEWAY_SECONDS, AccessTokenIssuer, TokenVerifier
from echo_identity.vault.kek_providers import kek_provider
from echo_identity.vault.keyring import Keyring
from echo_identity.web.context import request_context

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


def keyring_factory(settings: Settings) -> Any:
    keks = kek_provider(settings)

    def keyring_for(session: Session) -> Keyring:
        return Keyring(session, keks)

    return keyring_for


def key_schedule(settings: Settings) -> KeySchedule:
    longest = max(settings.access_token_ttl, settings.id_token_ttl)
    return KeySchedule(
        publish_ahead=timedelta(seconds=settings.key_publish_ahead),
        retention=timedelta(seconds=longest + LEEWAY_SECONDS),
    )


class EchoAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self._provider = provider

    def query_client(self, client_id: str) -> AuthlibClient | None:
        return self._provider.client(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self._provider.save_token(token, request)


class EchoIssuerParameter(IssuerParameter):  # type: ignore[misc]
    """RFC 9207: ``iss`` in every authorization response, errors included."""

    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def get_issuer(self) -> str:
        return self._issuer


@dataclass
class Provider:
    settings: Settings
    keys: SigningKeys
    access_tokens: AccessTokenIssuer
    verifier: TokenVerifier
    server: EchoAuthorizationServer | None = None

    def registry(self, session: Session) -> ClientRegistry:
        return ClientRegistry(session, self.settings.secret_key_bytes())

    @cached_property
    def _client_digest_key(self) -> bytes:
        return client_digest_key(self.settings.secret_key_bytes())

    def client(self, client_id: str | None) -> AuthlibClient | None:
        """The enabled client ``client_id`` wrapped for Authlib, or ``None``.

        Read fresh on every request (a disabled client is refused from its next request), with
        one Core query on a read-only connection: the request's transaction (and, on SQLite,
        the write lock) starts only when the token is saved, not for the client check.
        """
        if not client_id:
            return None
        row = current_database().read_row(ACTIVE_CLIENT, {"client_id": client_id})
        if row is None:
            return None
        return AuthlibClient(ClientRecord.from_mapping(row), self._client_digest_key)

    def authorization_server(self) -> EchoAuthorizationServer:
        assert self.server is not None, "init_app wires the server"
        return self.server

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
    ) -> dict[str, Any]:
        scope = scope or ""
        access = self.access_tokens.issue(
            client_id=client.client_id,
            subject=user.user.sub if user else client.client_id,
            audience=access_token_audience(self.settings, client, scope),
            scope=scope,
            auth_time=user.auth_time if user else None,
        )
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": access.token,
            "expires_in": self.access_tokens.ttl,
            "scope": scope,
        }
        if include_refresh_token and user is not None and self.refresh_allowed(client, scope):
            token["refresh_token"] = mint(SecretKind.REFRESH_TOKEN)
        return token

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Persist what a token response needs later, and audit it, in one commit."""
        session = request_session()
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
            claims = _unverified_claims(token["access_token"])
            session.add(
                IssuedAccessToken(
                    jti=claims["jti"],
                    family_id=family_id,
                    expires_at=datetime.fromtimestamp(claims["exp"], UTC),
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
        record(
            session,
            EventType.TOKEN_REFRESHED if grant_type == "refresh_token" else EventType.TOKEN_ISSUED,
            context=request_context(),
            client_id=client.client_id,
            user=owner.user.sub if owner else None,
            token=token["access_token"],
            details={"grant_type": grant_type, "scope": token.get("scope", "")},
        )
        session.commit()


def _unverified_claims(jwt_token: str) -> dict[str, Any]:
    """Claims of a JWT we have just minted ourselves (no need to verify our own signature)."""
    payload = jwt_token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def build_provider(settings: Settings, database: Database) -> Provider:
    keys = SigningKeys(database, keyring_factory(settings), key_schedule(settings))
    return Provider(
        settings=settings,
        keys=keys,
        access_tokens=AccessTokenIssuer(keys, settings.issuer, settings.access_token_ttl),
        verifier=TokenVerifier(keys, settings.issuer),
    )


def init_app(app: Flask, settings: Settings, database: Database) -> Provider:
    from echo_identity.idp.endpoints import register_endpoints
    from echo_identity.idp.grants.authorization_code import (
        AuthorizationCodeGrant,
        OpenIDCode,
        StrictCodeChallenge,
    )
    from echo_identity.idp.grants.client_credentials import ClientCredentialsGrant
    from echo_identity.idp.grants.refresh_token import RefreshTokenGrant

    provider = build_provider(settings, database)
    server = EchoAuthorizationServer(provider)
    server.register_token_generator("default", provider.generate_token)
    server.register_grant(
        AuthorizationCodeGrant,
        [StrictCodeChallenge(required=True), OpenIDCode(require_nonce=False)],
    )
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_extension(EchoIssuerParameter(settings.issuer))
    provider.server = server
    app.extensions["echo.idp"] = provider
    register_endpoints(app, server, settings)
    return provider
