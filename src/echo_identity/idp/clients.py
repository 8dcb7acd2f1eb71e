"""Registering OAuth clients. Secrets (``echo_cs_…``) are shown once and stored only as a keyed
digest."""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin
from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from echo_identity.crypto.digests import derive_key, digests_match, keyed_digest
from echo_identity.crypto.secret_formats import SecretKind, mint
from echo_identity.idp.errors import (
    InvalidClientMetadataError,
    InvalidRedirectUriError,
    UnknownClientError,
)
from echo_identity.idp.models import OAuthClient

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
ID_TOKEN_ALGORITHMS = ("RS256", "ES256", "EdDSA")
_LOOPBACK_HOSTS = {"127.0.0.1", "[::1]", "localhost"}


@dataclass(frozen=True)
class ClientRecord:
    """What the protocol needs to know about a client: a plain value read with one Core query
    (no ORM identity map or unit of work on the token path). Immutable all the way down (lists
    become tuples): one record is shared by every thread of the process (``Provider.client``
    keeps it for a second)."""

    client_id: str
    name: str
    secret_digest: str | None
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    scope: str
    audiences: tuple[str, ...]
    id_token_alg: str
    vault_providers: tuple[str, ...]
    tokens_not_before: datetime | None = None  # its access tokens issued before are refused

    @classmethod
    def from_mapping(cls, values: Any) -> ClientRecord:
        return cls(
            client_id=values["client_id"],
            name=values["name"],
            secret_digest=values["secret_digest"],
            redirect_uris=tuple(values["redirect_uris"]),
            post_logout_redirect_uris=tuple(values["post_logout_redirect_uris"]),
            grant_types=tuple(values["grant_types"]),
            scope=values["scope"],
            audiences=tuple(values["audiences"]),
            id_token_alg=values["id_token_alg"],
            vault_providers=tuple(values["vault_providers"]),
            tokens_not_before=values["tokens_not_before"],
        )


_RECORD_FIELDS = tuple(field.name for field in fields(ClientRecord))
# The enabled client with a given id: one constant statement, compiled once and cached.
ACTIVE_CLIENT: Select[Any] = select(*(getattr(OAuthClient, name) for name in _RECORD_FIELDS)).where(
    OAuthClient.client_id == bindparam("client_id"), OAuthClient.disabled.is_(False)
)


@dataclass(frozen=True)
class RegisteredClient:
    client: OAuthClient
    client_secret: str | None  # shown once; None for public clients


def new_client_id() -> str:
    """24 random letters and digits (~143 bits): safe in URLs, shells and command lines
    (a leading ``-`` from base64url would read as an option)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(24))


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
    """OAuth clients in one database session; changes are flushed, the caller commits."""

    def __init__(self, session: Session, secret_key: bytes) -> None:
        self._session = session
        self._digest_key = client_digest_key(secret_key)

    def create(
        self,
        name: str,
        *,
        redirect_uris: Sequence[str] = (),
        grant_types: Sequence[str] = ("authorization_code", "refresh_token"),
        scope: str = "openid profile email offline_access",
        public: bool = False,
        post_logout_redirect_uris: Sequence[str] = (),
        audiences: Sequence[str] = (),
        id_token_alg: str = "RS256",  # noqa: S107 - an algorithm name
        vault_providers: Sequence[str] = (),
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
        if id_token_alg not in ID_TOKEN_ALGORITHMS:
            raise InvalidClientMetadataError(
                f"The ID-token algorithm must be one of {', '.join(ID_TOKEN_ALGORITHMS)}."
            )
        logout_uris = [check_redirect_uri(uri) for uri in post_logout_redirect_uris]
        if any(not a.strip() or len(a) > 200 for a in audiences):
            raise InvalidClientMetadataError("Audiences are 1-200 characters.")
        secret = None if public else mint(SecretKind.CLIENT_SECRET)
        client = OAuthClient(
            client_id=new_client_id(),
            name=name,
            secret_digest=keyed_digest(self._digest_key, secret) if secret else None,
            redirect_uris=uris,
            grant_types=list(grant_types),
            scope=" ".join(dict.fromkeys(scope.split())),
            token_endpoint_auth_method="none" if public else "client_secret_basic",
            post_logout_redirect_uris=logout_uris,
            audiences=list(audiences),
            id_token_alg=id_token_alg,
            vault_providers=list(dict.fromkeys(vault_providers)),
        )
        self._session.add(client)
        self._session.flush()
        return RegisteredClient(client, secret)

    def find(self, client_id: str) -> OAuthClient | None:
        """The client with ``client_id``, or ``None``."""
        return self._session.scalar(select(OAuthClient).where(OAuthClient.client_id == client_id))

    def find_by_name(self, name: str) -> OAuthClient | None:
        """The first client called ``name``, or ``None``."""
        return self._session.scalar(
            select(OAuthClient).where(OAuthClient.name == name).order_by(OAuthClient.id)
        )

    def list_clients(self) -> Sequence[OAuthClient]:
        return self._session.scalars(select(OAuthClient).order_by(OAuthClient.created_at)).all()

    def set_disabled(self, client_id: str, disabled: bool = True) -> OAuthClient:
        """Disable (or re-enable) a client; raises :class:`UnknownClientError`."""
        row = self.find(client_id)
        if row is None:
            raise UnknownClientError()
        row.disabled = disabled
        self._session.flush()
        return row

    def rotate_secret(self, client_id: str) -> RegisteredClient:
        """Replace the client's secret with a new one (returned once, stored as its digest;
        flushed, the caller commits). The old secret is refused from the commit on (every
        process re-reads a client at least once a second): there is no grace period, the
        client keeps one digest.

        Raises :class:`UnknownClientError`, and :class:`InvalidClientMetadataError` for a
        public client (it has no secret).
        """
        row = self.find(client_id)
        if row is None:
            raise UnknownClientError()
        if row.public:
            raise InvalidClientMetadataError("A public client has no secret to rotate.")
        secret = mint(SecretKind.CLIENT_SECRET)
        row.secret_digest = keyed_digest(self._digest_key, secret)
        self._session.flush()
        return RegisteredClient(row, secret)


def client_digest_key(secret_key: bytes) -> bytes:
    """The key client secrets are digested with, derived from ``ECHO_SECRET_KEY``."""
    return derive_key(secret_key, "client-secret")


class AuthlibClient(ClientMixin):  # type: ignore[misc]
    """The view of a registered client that Authlib's grants and endpoints use.

    Read-only (its record is immutable, its metadata a read-only mapping, and setting an
    attribute raises ``AttributeError``): one instance serves every thread for as long as
    ``Provider.client`` keeps it.
    """

    row: ClientRecord
    _digest_key: bytes
    _metadata: Mapping[str, Any]

    def __init__(self, row: ClientRecord, digest_key: bytes) -> None:
        object.__setattr__(self, "row", row)
        object.__setattr__(self, "_digest_key", digest_key)
        metadata = {"post_logout_redirect_uris": row.post_logout_redirect_uris}
        object.__setattr__(self, "_metadata", MappingProxyType(metadata))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only (shared between threads)")

    @property
    def client_metadata(self) -> Mapping[str, Any]:
        return self._metadata

    @property
    def id_token_signed_response_alg(self) -> str:
        return self.row.id_token_alg

    @property
    def client_id(self) -> str:
        return self.row.client_id

    @property
    def confidential(self) -> bool:
        return self.row.secret_digest is not None

    def identities(self) -> set[str]:
        """The audience values that name this client when it presents a token."""
        return {self.row.client_id, *self.row.audiences}

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.row.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = self.row.scope.split()
        if not scope:
            return " ".join(allowed)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.row.redirect_uris  # exact string match, RFC 9700 §2.1

    def check_client_secret(self, client_secret: str) -> bool:
        if self.row.secret_digest is None:
            return False
        return digests_match(self.row.secret_digest, keyed_digest(self._digest_key, client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.confidential:
            return method in {"client_secret_basic", "client_secret_post"}
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.row.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.row.grant_types
