"""/userinfo — claims about the user behind a Bearer access token (OIDC Core §5.3).

The token must name the userinfo audience (``ECHO_USERINFO_AUDIENCE``; every token granted
``openid`` does) and have been issued to a user. Every answer is audited: a read as
``oauth.userinfo.read`` (client, user, token fingerprint), a refusal as ``api.access.denied``
(aggregated per window, see :func:`~echo_identity.idp.bearer.refuse`).
"""

from __future__ import annotations

from flask import Response, jsonify

from echo_identity.audit.events import EventType
from echo_identity.audit.service import record_for_request
from echo_identity.idp.bearer import USERINFO_API, BearerGrant, authorize_bearer, refuse
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.errors import BearerError, InvalidBearerTokenError
from echo_identity.idp.userinfo import user_claims
from echo_identity.web.csrf import csrf_exempt


@bp.route("/userinfo", methods=["GET", "POST"])
@csrf_exempt
def userinfo() -> Response:
    grant: BearerGrant | None = None
    try:
        grant = authorize_bearer(USERINFO_API, "openid")
        if grant.user is None:  # a client's own token: there is no user to describe
            raise InvalidBearerTokenError("The token was not issued to a user.", "not_a_user")
    except BearerError as exc:
        return refuse(USERINFO_API, exc, grant=grant)
    claims = user_claims(grant.user, " ".join(grant.scopes))
    record_for_request(
        EventType.USERINFO_READ,
        client_id=grant.client_id,
        user=grant.user_sub,
        token=grant.token,
        details={"claims": sorted(claims)},
    )
    return jsonify(claims)
