"""A connection's tokens at rest: envelope-encrypted under the user's DEK, each bound to its
row and field (:data:`~echo_identity.vault.models.ACCESS_TOKEN`,
:data:`~echo_identity.vault.models.REFRESH_TOKEN`), with the expiry bookkeeping that decides
when the worker refreshes. Nothing here commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from echo_identity.keys.keyring import Keyring
from echo_identity.vault.models import ACCESS_TOKEN, REFRESH_TOKEN, Connection
from echo_identity.vault.upstream import UpstreamToken

REFRESH_WITHOUT_EXPIRY = timedelta(hours=24)


@dataclass(frozen=True)
class FreshToken:
    """An access token handed out, and whether it was refreshed to be."""

    access_token: str
    token_type: str
    expires_at: datetime | None
    scope: str
    refreshed: bool


def store_tokens(
    keyring: Keyring,
    connection: Connection,
    token: UpstreamToken,
    *,
    now: datetime,
    refresh_window: timedelta,
) -> None:
    """Encrypt ``token`` into ``connection`` (a refresh token only when the provider sent one,
    otherwise ours is kept) and set its expiry, next refresh and status ``active``."""
    connection.access_token_ciphertext = keyring.encrypt(
        ACCESS_TOKEN.owner_for(connection.user_id),
        token.access_token.encode(),
        ACCESS_TOKEN.context_for(connection.id),
    )
    if token.refresh_token is not None:  # rotated by the provider; otherwise keep ours
        connection.refresh_token_ciphertext = keyring.encrypt(
            REFRESH_TOKEN.owner_for(connection.user_id),
            token.refresh_token.encode(),
            REFRESH_TOKEN.context_for(connection.id),
        )
    connection.token_type = token.token_type
    if token.scope is not None:
        connection.scope = " ".join(token.scope.replace(",", " ").split())
    if token.expires_in is not None:
        connection.expires_at = now + timedelta(seconds=token.expires_in)
        connection.refresh_due_at = connection.expires_at - refresh_window
    else:
        connection.expires_at = None
        connection.refresh_due_at = now + REFRESH_WITHOUT_EXPIRY
    connection.last_refreshed_at = now
    connection.status = "active"
    connection.refresh_failures = 0


def read_access_token(keyring: Keyring, connection: Connection, *, refreshed: bool) -> FreshToken:
    """The stored access token of ``connection``, decrypted.

    Raises :class:`~echo_identity.crypto.aead.DecryptionError` when it does not decrypt in
    this row (moved, altered, or its key destroyed).
    """
    assert connection.access_token_ciphertext is not None
    access = keyring.decrypt(
        connection.access_token_ciphertext, ACCESS_TOKEN.context_for(connection.id)
    )
    return FreshToken(
        access.decode(), connection.token_type, connection.expires_at, connection.scope, refreshed
    )


def read_refresh_token(keyring: Keyring, connection: Connection) -> str | None:
    """The stored refresh token of ``connection``, decrypted; ``None`` when there is none.

    Raises :class:`~echo_identity.crypto.aead.DecryptionError` as :func:`read_access_token`.
    """
    if connection.refresh_token_ciphertext is None:
        return None
    plain = keyring.decrypt(
        connection.refresh_token_ciphertext, REFRESH_TOKEN.context_for(connection.id)
    )
    return plain.decode()


def expiring(connection: Connection, min_ttl: int, now: datetime) -> bool:
    """True when the access token has less than ``min_ttl`` seconds left at ``now`` (without
    a known expiry: when its next refresh is due)."""
    if connection.expires_at is None:
        return connection.refresh_due_at is not None and connection.refresh_due_at <= now
    return connection.expires_at - now < timedelta(seconds=min_ttl)
