"""A shared-secret Bearer credential (``ECHO_METRICS_TOKEN`` at ``/metrics``), read and refused
the same way as the provider's access tokens (RFC 6750 §2.1, §3.1)."""

from __future__ import annotations

import hmac

from flask import Response

from echo_identity.idp.bearer import bearer_error_response, bearer_token
from echo_identity.idp.errors import InvalidBearerTokenError


def static_bearer_refusal(expected: str, description: str) -> Response | None:
    """``None`` when this request's Bearer credential is ``expected`` (compared in constant
    time), else the 401 ``invalid_token`` answer with its challenge, saying ``description``."""
    offered = (bearer_token() or "").encode()
    if hmac.compare_digest(offered, expected.encode()):
        return None
    return bearer_error_response(InvalidBearerTokenError(description))
