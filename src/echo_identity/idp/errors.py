"""Errors raised while managing OAuth clients."""

from __future__ import annotations

from echo_identity.errors import EchoError


class InvalidClientMetadataError(EchoError):
    """RFC 7591 §3.2.2 ``invalid_client_metadata``: a registration value is unacceptable."""

    code = "invalid_client_metadata"
    status = 400


class InvalidRedirectUriError(InvalidClientMetadataError):
    """RFC 7591 §3.2.2 ``invalid_redirect_uri``."""

    code = "invalid_redirect_uri"
    description = (
        "Redirect URIs must be absolute, without a fragment, and use https "
        "(http is allowed only for 127.0.0.1, [::1] and localhost)."
    )


class InvalidTokenError(EchoError):
    """RFC 6750 §3.1 ``invalid_token``; ``code`` narrows the reason for /verify callers."""

    code = "invalid_token"
    status = 401
    description = "The token is invalid."

    def __init__(self, description: str | None = None, code: str | None = None) -> None:
        super().__init__(description)
        if code is not None:
            self.code = code


class UnknownClientError(InvalidClientMetadataError):
    code = "unknown_client"
    status = 404
    description = "No client has that client_id."
