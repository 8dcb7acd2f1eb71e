"""``GET /api/v1/audit/events``: the audit trail for SIEMs and auditors, read with a token.

Callers present an Echo Identity access token (Bearer, RFC 9068) for the API audience
(``ECHO_API_AUDIENCE``) with scope ``audit:read``, checked by the one bearer decision
(:func:`~echo_identity.idp.bearer.authorize_bearer`). Missing or invalid tokens get 401, a
valid token without the scope 403 ``insufficient_scope`` (RFC 6750 §3.1). The trail is about
everybody, so only a service's own (client-credentials) token may read it: a token issued to a
user gets 403 ``access_denied`` even with ``audit:read``. Refusals are recorded as
``api.access.denied``; every successful read is itself recorded (``admin.audit.events_read``:
client, filters, how many events were returned).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from echo_identity.audit.event_search import EventQuery, search_events
from echo_identity.audit.events import EventType
from echo_identity.audit.service import record_for_request
from echo_identity.db import Database
from echo_identity.idp.bearer import AUDIT_EVENTS_API, BearerGrant, authorize_bearer, refuse
from echo_identity.idp.errors import BearerAccessDeniedError, BearerError
from echo_identity.web import rate_limits
from echo_identity.web.context import service
from echo_identity.web.csrf import csrf_exempt
from echo_identity.web.rate_limits import api_limit

bp = Blueprint("audit_api", __name__, url_prefix="/api/v1/audit")
READ_SCOPE = "audit:read"


@bp.get("/events")
@csrf_exempt
@rate_limits.limit(api_limit)
def events() -> Response:
    grant: BearerGrant | None = None
    try:
        grant = authorize_bearer(AUDIT_EVENTS_API, READ_SCOPE)
        if grant.user is not None:
            raise BearerAccessDeniedError(
                "Only a service's own (client-credentials) token may read the audit trail."
            )
    except BearerError as exc:
        return refuse(AUDIT_EVENTS_API, exc, grant=grant)
    filters = request.args.to_dict()
    query = EventQuery.from_args(filters)
    with service(Database).read_session() as session:
        page = search_events(session, query)
    # Reading the trail is itself audited: who read which slice, committed before the answer.
    record_for_request(
        EventType.AUDIT_EVENTS_READ,
        client_id=grant.client_id,
        token=grant.token,
        details={
            "filters": {k: v[:128] for k, v in filters.items() if k != "cursor"},
            "returned": len(page.events),
        },
    )
    return jsonify(events=page.events, next_cursor=page.next_cursor)
