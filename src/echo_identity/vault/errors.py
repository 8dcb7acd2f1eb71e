"""Token-vault errors, each with a stable machine code.

EchoError
└── VaultError
    ├── UnknownProviderError        404 unknown_provider
    ├── InvalidProviderError        400 invalid_provider
    ├── ConnectionNotFoundError     404 connection_not_found
    ├── NeedsReauthError            409 needs_reauth
    ├── ConnectStateError           400 invalid_state
    ├── VaultAccessDeniedError      403 access_denied
    └── UpstreamError               502 upstream_error
        └── UpstreamInvalidGrantError   invalid_grant (the provider refused the grant)
"""

from __future__ import annotations

from echo_identity.errors import EchoError


class VaultError(EchoError):
    code = "vault_error"
    status = 400


class UnknownProviderError(VaultError):
    code = "unknown_provider"
    status = 404
    description = "No provider has that name; list them with: echo-identity providers list"


class InvalidProviderError(VaultError):
    code = "invalid_provider"
    description = "The provider settings are not usable."


class ConnectionNotFoundError(VaultError):
    code = "connection_not_found"
    status = 404
    description = "The user has not connected that provider."


class NeedsReauthError(VaultError):
    code = "needs_reauth"
    status = 409
    description = "The provider no longer accepts this connection; the user must reconnect."


class ConnectStateError(VaultError):
    code = "invalid_state"
    description = "This connection attempt expired or did not start here. Start it again."


class VaultAccessDeniedError(VaultError):
    code = "access_denied"
    status = 403
    description = "This client may not read that user's tokens for that provider."


class UpstreamError(VaultError):
    code = "upstream_error"
    status = 502
    description = "The provider did not answer properly; the previous token was kept."


class UpstreamInvalidGrantError(UpstreamError):
    code = "invalid_grant"
    description = "The provider refused the grant."


class StoredTokenUnreadableError(VaultError):
    """A stored ciphertext does not decrypt in its row: moved, altered, or its key destroyed."""

    code = "stored_token_unreadable"
    status = 500
    description = (
        "The stored token cannot be decrypted (it was moved or altered, or its key was "
        "destroyed); the user must reconnect the provider."
    )
