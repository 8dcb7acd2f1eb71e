"""/verify — strict access-token verification for services (client-authenticated POST).

Answers ``{"active": true, ...claims}`` for a token that this issuer signed with an allowed
algorithm, that is meant for the calling client (or one of its audiences), within its
lifetime, and not revoked; otherwise 401 ``{"active": false, "error": <reason>}``. A request
that breaks RFC 6749 §2.3/§3.2 (:mod:`.client_request`) gets that error in the same shape, with
its own status (400 ``invalid_request``, 401 ``invalid_client``).
"""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Response, jsonify, request

from echo_identity.audit.events import EventType
from echo_identity.audit.service import record_for_request
from echo_identity.idp.clients import AuthlibClient
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.endpoints.client_request import check_client_request
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.provider import Provider
from echo_identity.web.context import service
from echo_identity.web.csrf import csrf_exempt

CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


def _inactive(error: str, description: str, status: int = 401) -> Response:
    response = jsonify(active=False, error=error, error_description=description)
    response.status_code = status
    return response


def _refused(error: OAuth2Error) -> Response:
    """An Authlib protocol error in this endpoint's shape, with the error's own headers
    (``WWW-Authenticate`` for a 401)."""
    response = _inactive(error.error, error.get_error_description(), error.status_code)
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


@bp.post("/verify")
@csrf_exempt
def verify() -> Response:
    try:
        check_client_request(request)
    except OAuth2Error as error:
        return _refused(error)
    provider = service(Provider)
    server = provider.server
    try:
        client: AuthlibClient = server.authenticate_client(
            server.create_oauth2_request(request), CLIENT_AUTH_METHODS, "verify"
        )
    except OAuth2Error:
        return _inactive("invalid_client", "Authenticate the calling client.")
    token = request.form.get("token", "")
    try:
        if not token:
            raise InvalidTokenError("Send the token in the 'token' form field.", "invalid_request")
        claims = provider.verifier.verify_access_token(token, client.identities())
        problem = provider.token_state.access_token_problem(claims)
        if problem is not None:
            raise problem
    except InvalidTokenError as exc:
        record_for_request(
            EventType.TOKEN_VERIFIED,
            outcome="failure",
            client_id=client.client_id,
            token=token or None,
            details={"error": exc.code},
        )
        return _inactive(exc.code, exc.description)
    record_for_request(
        EventType.TOKEN_VERIFIED,
        client_id=client.client_id,
        # a client-credentials token has the client as sub: not a person, nothing to map
        user=claims["sub"] if claims.get("sub") != claims.get("client_id") else None,
        token=token,
    )
    return jsonify(active=True, **claims)
