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
