"""``GET /api/v1/audit/events``: the audit trail for SIEMs and auditors, read with a token.

Callers present an Echo Identity access token (Bearer, RFC 9068) with scope ``audit:read``,
verified by the shared :class:`~echo_identity.idp.tokens.TokenVerifier` and checked against
revocations exactly like the vault API. Missing or invalid tokens get 401, a valid token
without the scope 403 ``insufficient_scope`` (RFC 6750 §3.1). Every successful read is itself
recorded (``admin.audit.events_read``: client, filters, how many events were returned).
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify, request

from echo_identity.audit.event_search import EventQuery, search_events
from echo_identity.audit.events import EventType
from echo_identity.audit.service import record
from echo_identity.db import current_database, request_session
from echo_identity.idp.bearer import bearer_error, bearer_token, presented_claims, token_scopes
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.web.context import request_context
from echo_identity.web.csrf import csrf_exempt
from echo_identity.web.errors import json_blueprint
from echo_identity.web.rate_limits import api_limit, limiter

bp = Blueprint("audit_api", __name__, url_prefix="/api/v1/audit")
READ_SCOPE = "audit:read"


@bp.get("/events")
@csrf_exempt
@limiter.limit(api_limit)
def events() -> Response:
    try:
        claims = presented_claims()
    except InvalidTokenError as exc:
        return bearer_error("invalid_token", exc.description)
    if READ_SCOPE not in token_scopes(claims):
        return bearer_error(
            "insufficient_scope", f"The access token lacks the {READ_SCOPE} scope.", 403
        )
    filters = request.args.to_dict()
    query = EventQuery.from_args(filters)
    with current_database().read_session() as session:
        page = search_events(session, query)
    # Reading the trail is itself audited: who read which slice, committed before the answer.
    session = request_session()
    record(
        session,
        EventType.AUDIT_EVENTS_READ,
        context=request_context(),
        client_id=str(claims["client_id"]),
        token=bearer_token(),
        details={
            "filters": {k: v[:128] for k, v in filters.items() if k != "cursor"},
            "returned": len(page.events),
        },
    )
    session.commit()
    return jsonify(events=page.events, next_cursor=page.next_cursor)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    json_blueprint(app, bp)
