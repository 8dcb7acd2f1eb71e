"""Registering OAuth clients. Secrets are shown once and stored only as a keyed digest."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.crypto.digests import derive_key, digests_match, keyed_digest
from echo_identity.idp.errors import InvalidClientMetadataError, InvalidRedirectUriError
from echo_identity.idp.models import OAuthClient

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
_LOOPBACK_HOSTS = {"127.0.0.1", "[::1]", "localhost"}


@dataclass(frozen=True)
class RegisteredClient:
    client: OAuthClient
    client_secret: str | None  # shown once; None for public clients


def check_redirect_uri(uri: str) -> str:
    """``uri`` if it is an acceptable redirect URI; raises :class:`InvalidRedirectUriError`."""
    parts = urlsplit(uri)
    if parts.fragment or not parts.scheme or "#" in uri:
        raise InvalidRedirectUriError()
    if parts.scheme == "https" and parts.netloc:
        return uri
    if parts.scheme == "http" and parts.hostname and parts.netloc.split(":")[0] in _LOOPBACK_HOSTS:
        return uri
    if parts.scheme == "http" and parts.hostname == "::1":
        return uri
    raise InvalidRedirectUriError()


class ClientRegistry:
    """OAuth clients in one database session; commits its own changes."""

    def __init__(self, session: Session, secret_key: bytes) -> None:
        self._session = session
        self._digest_key = derive_key(secret_key, "client-secret")

    def create(
        self,
        name: str,
        *,
        redirect_uris: Sequence[str] = (),
        grant_types: Sequence[str] = ("authorization_code", "refresh_token"),
        scope: str = "openid profile email offline_access",
        public: bool = False,
    ) -> RegisteredClient:
        """Register a client; raises :class:`InvalidClientMetadataError` for bad values."""
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise InvalidClientMetadataError("A client name is 1-200 characters.")
        unknown = sorted(set(grant_types) - set(GRANT_TYPES))
        if unknown:
            raise InvalidClientMetadataError(f"Unsupported grant types: {', '.join(unknown)}.")
        uris = [check_redirect_uri(uri) for uri in redirect_uris]
        if "authorization_code" in grant_types and not uris:
            raise InvalidClientMetadataError("The authorization_code grant needs a redirect URI.")
        if public and "client_credentials" in grant_types:
            raise InvalidClientMetadataError("Public clients cannot use client_credentials.")
        secret = None if public else secrets.token_urlsafe(32)
        client = OAuthClient(
            client_id=secrets.token_urlsafe(16),
            name=name,
            secret_digest=keyed_digest(self._digest_key, secret) if secret else None,
            redirect_uris=uris,
            grant_types=list(grant_types),
            scope=scope,
            token_endpoint_auth_method="none" if public else "client_secret_basic",
        )
        self._session.add(client)
        self._session.commit()
        return RegisteredClient(client, secret)

    def find(self, client_id: str) -> OAuthClient | None:
        """The client with ``client_id``, or ``None``."""
        return self._session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))

    def find_by_name(self, name: str) -> OAuthClient | None:
        """The first client called ``name``, or ``None``."""
        return self._session.scalar(
            select(OAuthClient).where(OAuthClient.name == name).order_by(OAuthClient.id)
        )

    def secret_matches(self, client: OAuthClient, secret: str) -> bool:
        """Constant-time check of a presented secret against the stored digest."""
        if client.secret_digest is None:
            return False
        return digests_match(client.secret_digest, keyed_digest(self._digest_key, secret))
