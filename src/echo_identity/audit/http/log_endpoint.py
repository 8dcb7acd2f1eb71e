"""POST /log — services send their application logs with a Bearer access token.

The token must be an Echo Identity access token (RFC 9068) for the log audience
(``ECHO_LOG_AUDIENCE``) with scope ``logs:write``, not revoked: the one bearer decision
(:func:`~echo_identity.idp.bearer.authorize_bearer`). The source of the events is the token's
``client_id``; the body cannot name another one. A missing token is a 401 with a bare
``Bearer`` challenge, an invalid one a 401 ``invalid_token``, a valid one without
``logs:write`` a 403 ``insufficient_scope`` (RFC 6750 §3.1); each refusal is recorded as
``api.access.denied`` (aggregated per window) and nothing is stored. Parsing, redaction and
storage are :mod:`echo_identity.audit.log_ingest`'s.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from echo_identity.audit.errors import BodyTooLargeError
from echo_identity.audit.log_ingest import parse_log_body, store_log_entries
from echo_identity.config import Settings
from echo_identity.idp.bearer import LOG_API, authorize_bearer, refuse
from echo_identity.idp.errors import BearerError
from echo_identity.web.context import request_session, service
from echo_identity.web.csrf import csrf_exempt
from echo_identity.web.request_id import current_request_id

bp = Blueprint("audit_log", __name__)
LOG_SCOPE = "logs:write"


def _body(limit: int) -> bytes:
    """At most ``limit`` bytes of the body; raises :class:`BodyTooLargeError` beyond that."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLargeError(f"The body is larger than {limit} bytes.")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise BodyTooLargeError(f"The body is larger than {limit} bytes.")
    return raw


@bp.post("/log")
@csrf_exempt
def ingest() -> Response:
    settings = service(Settings)
    try:
        source = authorize_bearer(LOG_API, LOG_SCOPE).client_id
    except BearerError as exc:
        return refuse(LOG_API, exc)
    entries = parse_log_body(_body(settings.log_max_body_bytes), max_batch=settings.log_max_batch)
    session = request_session()
    stored = store_log_entries(session, source, entries, current_request_id() or None)
    session.commit()  # the request's one commit: storing logs records no audit event
    response = jsonify(stored=stored, source=source)
    response.status_code = 201
    return response
