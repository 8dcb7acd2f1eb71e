"""Token-vault errors, each with a stable machine code.

EchoError
└── VaultError
    ├── UnknownProviderError        404 unknown_provider
    ├── InvalidProviderError        400 invalid_provider
    ├── ConnectionNotFoundError     404 connection_not_found
    ├── NeedsReauthError            409 needs_reauth
    ├── ConnectStateError           400 invalid_state
    ├── VaultAccessDeniedError      403 access_denied (one answer for every reason)
    ├── InvalidTokenRequestError    400 invalid_request (the token call's body)
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
    """The token may not touch that user's connection to that provider: its client is not
    registered for the provider, it was issued to another user, or (a client's own token) the
    user's consent does not name the client. Unknown users get the same answer, so the message
    says nothing about which reason applied."""

    code = "access_denied"
    status = 403
    description = "This access token may not use that user's connection to that provider."


class InvalidTokenRequestError(VaultError):
    code = "invalid_request"
    description = (
        'Send a JSON object: {"min_ttl": whole seconds 0-3600, "force_refresh": true|false}.'
    )


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
