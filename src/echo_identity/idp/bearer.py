"""Bearer access tokens presented to our own APIs (RFC 6750): one check for every endpoint.

``/userinfo``, the vault API, ``/log`` and the audit events API all accept an access token
this issuer minted. :func:`presented_claims` is the one place that reads the credential,
verifies it strictly (:class:`~echo_identity.idp.tokens.TokenVerifier`) and refuses revoked
tokens and tokens of disabled clients; each endpoint then checks the scope it needs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from flask import Response, jsonify, request

from echo_identity.db import request_session
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.provider_state import current_provider
from echo_identity.idp.revocation import Revocations


def bearer_token() -> str | None:
    """The RFC 6750 §2.1 Bearer credential of this request, or ``None``."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def bearer_error(error: str, description: str, status: int = 401) -> Response:
    """An RFC 6750 §3 error response with its ``WWW-Authenticate`` challenge."""
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers["WWW-Authenticate"] = f'Bearer error="{error}"'
    return response


def presented_claims(audiences: Collection[str] | None = None) -> dict[str, Any]:
    """The claims of this request's valid Bearer access token.

    ``audiences``: when given, the token's ``aud`` must name one of them. Raises
    :class:`InvalidTokenError` when there is no token, it fails verification, it was revoked,
    or its client has been disabled.
    """
    token = bearer_token()
    if token is None:
        raise InvalidTokenError("Send an access token issued by Echo Identity as Bearer.")
    claims = current_provider().verifier.verify_access_token(token, audiences)
    problem = Revocations(request_session()).access_token_problem(claims)
    if problem is not None:
        raise problem
    return claims


def token_scopes(claims: dict[str, Any]) -> set[str]:
    """The scopes an access token's ``scope`` claim grants."""
    return set(str(claims.get("scope", "")).split())
