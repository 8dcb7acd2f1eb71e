"""/userinfo — claims about the user behind a Bearer access token (OIDC Core §5.3)."""

from __future__ import annotations

from flask import Response, jsonify, request
from sqlalchemy import select

from echo_identity.accounts.models import User
from echo_identity.db import request_session
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.provider_state import current_provider
from echo_identity.idp.revocation import Revocations
from echo_identity.idp.userinfo import user_claims
from echo_identity.web.csrf import csrf_exempt


def bearer_token() -> str | None:
    """The RFC 6750 §2.1 Bearer credential of this request, or ``None``."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def bearer_error(error: str, description: str, status: int = 401) -> Response:
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers["WWW-Authenticate"] = f'Bearer error="{error}"'
    return response


@bp.route("/userinfo", methods=["GET", "POST"])
@csrf_exempt
def userinfo() -> Response:
    token = bearer_token()
    if token is None:
        response = bearer_error("invalid_request", "Send the access token as a Bearer token.")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    session = request_session()
    try:
        claims = current_provider().verifier.verify_access_token(token)
    except InvalidTokenError as exc:
        return bearer_error("invalid_token", exc.description)
    problem = Revocations(session).access_token_problem(claims)
    if problem is not None:
        return bearer_error("invalid_token", problem.description)
    if "openid" not in str(claims.get("scope", "")).split():
        return bearer_error("insufficient_scope", "The token lacks the openid scope.", 403)
    user = session.scalar(select(User).where(User.sub == claims["sub"]))
    if user is None or user.disabled:
        return bearer_error("invalid_token", "The token's user no longer exists.")
    return jsonify(user_claims(user, str(claims["scope"])))
