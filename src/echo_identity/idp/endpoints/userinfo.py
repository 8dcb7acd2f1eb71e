"""/userinfo — claims about the user behind a Bearer access token (OIDC Core §5.3)."""

from __future__ import annotations

from flask import Response, jsonify
from sqlalchemy import select

from echo_identity.accounts.models import User
from echo_identity.db import request_session
from echo_identity.idp.bearer import bearer_error, bearer_token, presented_claims, token_scopes
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.userinfo import user_claims
from echo_identity.web.csrf import csrf_exempt


@bp.route("/userinfo", methods=["GET", "POST"])
@csrf_exempt
def userinfo() -> Response:
    if bearer_token() is None:
        response = bearer_error("invalid_request", "Send the access token as a Bearer token.")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    try:
        claims = presented_claims()
    except InvalidTokenError as exc:
        return bearer_error("invalid_token", exc.description)
    if "openid" not in token_scopes(claims):
        return bearer_error("insufficient_scope", "The token lacks the openid scope.", 403)
    user = request_session().scalar(select(User).where(User.sub == claims["sub"]))
    if user is None or user.disabled:
        return bearer_error("invalid_token", "The token's user no longer exists.")
    return jsonify(user_claims(user, str(claims["scope"])))
