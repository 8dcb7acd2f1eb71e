"""/token — the token endpoint (RFC 6749 §3.2): code, refresh and client-credentials grants.

Failed requests count against ``ECHO_TOKEN_FAILURE_RATE_LIMIT`` per client IP (successful
ones do not, so busy services are never throttled) and are audited.
"""

from __future__ import annotations

import json

from flask import Response, current_app, request

from echo_identity.audit.events import EventType
from echo_identity.audit.service import record
from echo_identity.config import Settings
from echo_identity.db import request_session
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.provider_state import current_provider
from echo_identity.web.context import request_context
from echo_identity.web.csrf import csrf_exempt
from echo_identity.web.rate_limits import limiter


def token_failure_limit() -> str:
    settings: Settings = current_app.extensions["echo.settings"]
    return settings.token_failure_rate_limit


def _client_error(status: int) -> bool:
    """Only the caller's mistakes count against the limit: a burst of our own 5xx (or the 429s
    the limit itself produces) must not lock well-behaved clients out."""
    return 400 <= status < 500 and status != 429


@bp.post("/token")
@csrf_exempt
@limiter.limit(
    token_failure_limit, deduct_when=lambda response: _client_error(response.status_code)
)
def token() -> Response:
    response: Response = current_provider().authorization_server().create_token_response()
    if response.status_code >= 400:
        _audit_failure(response)
    return response


def _audit_failure(response: Response) -> None:
    try:
        error = json.loads(response.get_data()).get("error", "unknown")
    except ValueError:
        error = "unknown"
    client_id = request.form.get("client_id")
    if client_id is None and request.authorization and request.authorization.username:
        client_id = request.authorization.username
    session = request_session()
    record(
        session,
        EventType.TOKEN_REQUEST_FAILED,
        context=request_context(),
        outcome="failure",
        client_id=(client_id or "")[:64] or None,
        details={"error": error, "grant_type": request.form.get("grant_type", "")[:40]},
    )
    session.commit()
