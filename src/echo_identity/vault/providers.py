"""Third-party OAuth providers: registration (explicit endpoints or discovery) and lookup."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, make_transient_to_detached

from echo_identity.cache import FreshFor
from echo_identity.keys.keyring import Keyring
from echo_identity.vault.errors import InvalidProviderError, UnknownProviderError
from echo_identity.vault.models import CLIENT_SECRET, Provider
from echo_identity.vault.upstream import TIMEOUT, ClientCredentials

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

Fetch = Callable[[str], dict[str, Any]]


def check_endpoint(url: str, what: str) -> str:
    """``url`` if it is https (or http on loopback); raises :class:`InvalidProviderError`."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return url
    raise InvalidProviderError(f"The {what} must be an https URL (http only on loopback).")


def fetch_discovery(issuer: str) -> dict[str, Any]:
    """The provider's OpenID (or RFC 8414) metadata; raises :class:`InvalidProviderError`."""
    base = issuer.rstrip("/")
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        try:
            response = httpx.get(base + path, timeout=TIMEOUT, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise InvalidProviderError(
                f"Cannot reach {base + path}: {type(exc).__name__}."
            ) from exc
        if response.status_code == 200:
            metadata: dict[str, Any] = response.json()
            return metadata
    raise InvalidProviderError(f"{issuer} publishes no discovery document.")


ProviderSettings = Mapping[str, Any]
"""A provider row's column values as read (``authorize_params`` included): what
:class:`ProviderRegistry` keeps per process between requests, never an ORM instance (an
instance belongs to one session and one thread)."""

_COLUMNS = tuple(attr.key for attr in inspect(Provider).column_attrs)


def _settings_of(row: Provider) -> ProviderSettings:
    values = {key: getattr(row, key) for key in _COLUMNS}
    values["authorize_params"] = MappingProxyType(dict(row.authorize_params or {}))
    return MappingProxyType(values)


class ProviderRegistry:
    """Providers in one database session (the caller commits).

    With ``settings`` (one per app: ``VaultRuntime``), :meth:`require` serves a provider's
    settings read at most a second ago (``echo_identity.cache``): a provider reconfigured or
    given a new client secret by another process is used by this one at most a second later.
    """

    def __init__(
        self, session: Session, keyring: Keyring, settings: FreshFor[ProviderSettings] | None = None
    ) -> None:
        self._session = session
        self._keyring = keyring
        self._settings = settings

    def add(
        self,
        name: str,
        *,
        client_id: str,
        client_secret: str,
        issuer: str | None = None,
        authorize_url: str | None = None,
        token_url: str | None = None,
        revocation_url: str | None = None,
        scope: str = "",
        authorize_params: Mapping[str, str] | None = None,
        fetch: Fetch = fetch_discovery,
    ) -> Provider:
        """Register a provider; raises :class:`InvalidProviderError` for unusable settings."""
        if not _NAME.fullmatch(name):
            raise InvalidProviderError(
                "Provider names are 1-64 lowercase letters, digits, '-' and '_'."
            )
        if self.find(name) is not None:
            raise InvalidProviderError(f"A provider called {name!r} exists already.")
        if not client_id or not client_secret:
            raise InvalidProviderError("Give the client id and, on standard input, its secret.")
        if issuer:
            metadata = fetch(check_endpoint(issuer, "issuer"))
            if metadata.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
                raise InvalidProviderError("The discovery document names a different issuer.")
            authorize_url = authorize_url or metadata.get("authorization_endpoint")
            token_url = token_url or metadata.get("token_endpoint")
            revocation_url = revocation_url or metadata.get("revocation_endpoint")
        if not authorize_url or not token_url:
            raise InvalidProviderError("Give --issuer, or both --authorize-url and --token-url.")
        provider = Provider(
            name=name,
            issuer=issuer,
            authorize_url=check_endpoint(authorize_url, "authorization URL"),
            token_url=check_endpoint(token_url, "token URL"),
            revocation_url=check_endpoint(revocation_url, "revocation URL")
            if revocation_url
            else None,
            client_id=client_id,
            client_secret_ciphertext=b"",
            scope=" ".join(scope.split()),
            authorize_params=dict(authorize_params or {}),
        )
        self._session.add(provider)
        self._session.flush()  # the id binds the ciphertext to this row
        provider.client_secret_ciphertext = self._keyring.encrypt(
            CLIENT_SECRET.owner_for(),
            client_secret.encode(),
            CLIENT_SECRET.context_for(provider.id),
        )
        return provider

    def find(self, name: str) -> Provider | None:
        return self._session.scalar(select(Provider).where(Provider.name == name))

    def require(self, name: str) -> Provider:
        """The provider ``name`` in this registry's session; raises
        :class:`UnknownProviderError`.

        With a settings cache, a provider read less than a second ago is put into the session
        from memory (``Session.merge(load=False)``: no query); an unknown name is looked up
        every time (nothing kept), so made-up names cannot fill the cache.
        """
        if self._settings is None:
            provider = self.find(name)
            if provider is None:
                raise UnknownProviderError()
            return provider
        found: list[Provider] = []

        def read(key: str) -> ProviderSettings | None:
            row = self.find(key)
            if row is None:
                return None
            found.append(row)
            return _settings_of(row)

        settings = self._settings.get(name, read)
        if settings is None:
            raise UnknownProviderError()
        if found:
            return found[0]
        values = dict(settings)
        values["authorize_params"] = dict(settings["authorize_params"])
        kept = Provider(**values)
        make_transient_to_detached(kept)
        return self._session.merge(kept, load=False)

    def list_providers(self) -> Sequence[Provider]:
        return self._session.scalars(select(Provider).order_by(Provider.name)).all()

    def credentials(self, provider: Provider) -> ClientCredentials:
        """The client id and decrypted secret, for a call to the provider."""
        secret = self._keyring.decrypt(
            provider.client_secret_ciphertext, CLIENT_SECRET.context_for(provider.id)
        )
        return ClientCredentials(provider.client_id, secret.decode())
