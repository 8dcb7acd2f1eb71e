"""Every error of the provider: managing OAuth clients, verifying tokens, the bearer APIs.

EchoError
├── InvalidClientMetadataError      400 invalid_client_metadata
│   ├── InvalidRedirectUriError     400 invalid_redirect_uri
│   └── UnknownClientError          404 unknown_client
├── UnknownDevClientError           400 invalid_client (/test-token, development only)
├── InvalidTokenError               401 invalid_token (a narrower ``code`` for /verify)
└── BearerError                     an RFC 6750 §3 refusal; :meth:`~BearerError.headers`
    │                               builds its ``WWW-Authenticate`` (here and nowhere else)
    ├── MissingBearerTokenError     401 invalid_request, challenge ``Bearer``
    ├── InvalidBearerTokenError     401 invalid_token
    ├── InsufficientScopeError      403 insufficient_scope
    └── BearerAccessDeniedError     403 access_denied (a valid token, another's resource)

Protocol errors of the OAuth endpoints themselves (``invalid_grant``, ``invalid_client`` at
/token ...) are Authlib's, which build their own headers the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from echo_identity.errors import EchoError

if TYPE_CHECKING:
    from echo_identity.idp.bearer_grant import BearerGrant


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


class UnknownDevClientError(EchoError):
    """/test-token (development only) was given no client, or one that is unknown or
    disabled; named after RFC 6749 §5.2 ``invalid_client``."""

    code = "invalid_client"
    status = 400
    description = "Give the client_id of a registered, enabled client."


class BearerError(EchoError):
    """A refusal at a bearer-protected API (RFC 6750 §3).

    ``reason`` is what the audit trail records (narrower than the wire ``code``: a client is
    told ``invalid_token``, the trail says ``invalid_audience``); :meth:`headers` carries the
    ``WWW-Authenticate`` challenge, built here and nowhere else. ``grant`` is the accepted token
    when the refusal came after it was verified (scope, subject), so the refusal is recorded
    against its client and user.
    """

    reason: str = ""
    grant: BearerGrant | None = None

    def __init__(self, description: str | None = None, reason: str | None = None) -> None:
        super().__init__(description)
        self.reason = reason or self.reason or self.code

    def challenge(self) -> str | None:
        """The ``WWW-Authenticate`` value (RFC 6750 §3), or ``None`` when there is none."""
        return f'Bearer error="{self.code}"'

    def headers(self) -> dict[str, str]:
        """The headers this refusal is answered with: its challenge, when it has one."""
        challenge = self.challenge()
        return {"WWW-Authenticate": challenge} if challenge is not None else {}


class MissingBearerTokenError(BearerError):
    """RFC 6750 §3.1: a request without any credential gets a bare ``Bearer`` challenge
    (no error code in the header); the body still carries a stable code."""

    code = "invalid_request"
    status = 401
    description = "Send an access token issued by Echo Identity as a Bearer token."
    reason = "missing_token"

    def challenge(self) -> str | None:
        return "Bearer"


class InvalidBearerTokenError(BearerError):
    """RFC 6750 §3.1 ``invalid_token``: not ours, malformed, expired, revoked, for another
    audience, of a disabled client or user."""

    code = "invalid_token"
    status = 401
    description = "The access token is invalid."


class InsufficientScopeError(BearerError):
    """RFC 6750 §3.1 ``insufficient_scope``: the challenge names the scope the call needs."""

    code = "insufficient_scope"
    status = 403

    def __init__(self, scope: str, grant: BearerGrant | None = None) -> None:
        super().__init__(f"The access token lacks the {scope} scope.")
        self.scope = scope
        self.grant = grant

    def challenge(self) -> str | None:
        return f'Bearer error="insufficient_scope", scope="{self.scope}"'


class BearerAccessDeniedError(BearerError):
    """A valid token with the right scope, for a resource it may not touch (another user's,
    or a service-only API called with a token issued to a user). Not an RFC 6750 code, so no
    challenge: a new token would not help."""

    code = "access_denied"
    status = 403
    description = "This access token may not be used for that resource."

    def challenge(self) -> str | None:
        return None
