"""/token — the token endpoint (RFC 6749 §3.2): code, refresh and client-credentials grants.

The request is first held to RFC 6749 §2.3/§3.2 (:mod:`.client_request`: parameters only in
the body, each once, one client authentication method). Failed requests, those refusals
included, count against ``ECHO_TOKEN_FAILURE_RATE_LIMIT`` per client IP (successful ones do
not, so busy services are never throttled) and are audited. An IP over the limit gets
429 with ``Retry-After`` before its request is looked at.

The grants and the provider's ``save_token`` only add to the request's session; this view
commits once, after the response is made: on success the claimed code or refresh token, the
tokens' records and the issuance event together; on failure whatever the refused request
must keep (a burnt code, a revoked family) with its refusal.
"""

from __future__ import annotations

from functools import cache

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Response, request

from echo_identity.audit.events import EventType
from echo_identity.audit.refusals import record_refusal
from echo_identity.config import Settings
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.endpoints.client_request import (
    check_client_request,
    claimed_client_id,
    well_formed,
)
from echo_identity.idp.provider import Provider, refused_with
from echo_identity.web import rate_limits
from echo_identity.web.context import (
    commit_request_session,
    request_context,
    request_session,
    service,
)
from echo_identity.web.csrf import csrf_exempt
from echo_identity.web.errors import error_response
from echo_identity.web.rate_limits import FailureLimit


@cache
def _failure_limit(value: str) -> FailureLimit:
    return FailureLimit("token-failures", value)


def failure_limit() -> FailureLimit:
    settings = service(Settings)
    return _failure_limit(settings.token_failure_rate_limit)


def _client_error(status: int) -> bool:
    """Only the caller's mistakes count against the limit: a burst of our own 5xx (or the 429s
    the limit itself produces) must not lock well-behaved clients out."""
    return 400 <= status < 500 and status != 429


@bp.post("/token")
@csrf_exempt
@rate_limits.exempt
def token() -> Response:
    ip = request.remote_addr or ""
    retry_after = failure_limit().retry_after(ip)
    if retry_after is not None:
        refused = error_response(
            "rate_limited", 429, "Too many failed token requests; wait before trying again."
        )
        refused.headers["Retry-After"] = str(retry_after)
        return refused
    server = service(Provider).server
    try:
        check_client_request(request)
    except OAuth2Error as error:
        response: Response = server.handle_error_response(None, error)
    else:
        response = server.create_token_response()
    if _client_error(response.status_code):
        failure_limit().spend(ip)
    if response.status_code >= 400:
        _audit_failure()
    commit_request_session()
    return response


def _audit_failure() -> None:
    """Record a refused token request on the request's session (the view commits), aggregated:
    repeats of the same refusal from one address within ``ECHO_AUDIT_REFUSAL_WINDOW`` are
    counted, not stored one by one. The client id is part of the key only when it names a
    registered client, so guessed ids cannot make every request a new window."""
    refusal = refused_with()
    error = refusal.error if refusal is not None else "unknown"
    # only well-formed values reach the trail: a NUL would fail the insert on PostgreSQL
    claimed = claimed_client_id(request)
    provider = service(Provider)
    client_id = claimed if claimed and provider.client(claimed) is not None else None
    grant_type = request.form.get("grant_type", "")
    record_refusal(
        request_session(),
        EventType.TOKEN_REQUEST_FAILED,
        reason=str(error)[:64],
        window_seconds=provider.settings.audit_refusal_window,
        context=request_context(),
        client_id=client_id,
        details={"grant_type": grant_type[:40] if well_formed(grant_type) else "?"},
        audit=provider.audit,
    )
