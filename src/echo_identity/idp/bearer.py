"""Bearer access tokens presented to Echo's own APIs (RFC 6750): one authorization decision.

Every bearer-protected API calls :func:`authorize_bearer` with its :class:`BearerApi` and the
scope the call needs, and answers every refusal through :func:`refuse` (recorded), or
:func:`bearer_error_response` (not recorded, ``/metrics``): the same condition gets the same
answer at every API.

====================  ==========================  ======================  ===================
API                   audience the token names    refusals recorded as    who may call
====================  ==========================  ======================  ===================
``/api/v1/users/…``   ``ECHO_API_AUDIENCE``       ``vault.token.denied``  see ``vault/api.py``
``/api/v1/audit/…``   ``ECHO_API_AUDIENCE``       ``api.access.denied``   services only
``/userinfo``         ``ECHO_USERINFO_AUDIENCE``  ``api.access.denied``   tokens of users
``/log``              ``ECHO_LOG_AUDIENCE``       ``api.access.denied``   ``logs:write``
====================  ==========================  ======================  ===================

The decision, in order (the first failure answers):

1. a Bearer credential is present, else :class:`MissingBearerTokenError` (401, bare
   ``Bearer`` challenge, RFC 6750 §3.1);
2. it is an access token this issuer signed (:class:`~echo_identity.idp.tokens.TokenVerifier`)
   and its ``aud`` names the API, else :class:`InvalidBearerTokenError` (401 ``invalid_token``;
   the audit trail gets the narrower reason) — except a token minted for Echo's own APIs (its
   ``aud`` names only its client and Echo's API audiences) that lacks the call's scope: its
   audience is missing *because* the scope is (``idp.provider.access_token_audience``), so it
   goes on to the scope check and gets 403 ``insufficient_scope``, as at the other APIs;
3. it is not revoked and its client is enabled
   (:class:`~echo_identity.idp.revocation.AccessTokenState`), else ``invalid_token``;
4. a token issued to a user (its ``sub`` is not its ``client_id``: code or refresh grant)
   belongs to an existing, enabled user, else ``invalid_token``;
5. the scope is granted, else :class:`InsufficientScopeError` (403 ``insufficient_scope``).

The :class:`BearerGrant` says whose resources the token may touch: a token issued to a user,
only that user's (:attr:`BearerGrant.user`); a client-credentials token acts as its client,
and the API decides for which users (the vault: those whose consent names the client).
Refusals are recorded with :func:`~echo_identity.audit.refusals.record_refusal`, so a caller
refused N times grows the trail by O(1) rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from flask import Response, jsonify, request
from sqlalchemy import select

from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType
from echo_identity.audit.refusals import record_refusal
from echo_identity.audit.service import AuditTrail
from echo_identity.config import Settings
from echo_identity.errors import EchoError
from echo_identity.idp.bearer_grant import BearerGrant as BearerGrant
from echo_identity.idp.errors import (
    BearerError,
    InsufficientScopeError,
    InvalidBearerTokenError,
    InvalidTokenError,
    MissingBearerTokenError,
)
from echo_identity.idp.provider import Provider
from echo_identity.idp.tokens import audiences_of
from echo_identity.web.context import request_context, request_session, service
from echo_identity.web.request_id import current_request_id


@dataclass(frozen=True)
class BearerApi:
    """One bearer-protected API: its name in audit details, its audience, its denial event."""

    name: str
    audience: Callable[[Settings], str]
    denied_event: EventType


VAULT_API = BearerApi("vault", attrgetter("effective_api_audience"), EventType.VAULT_TOKEN_DENIED)
AUDIT_EVENTS_API = BearerApi(
    "audit_events", attrgetter("effective_api_audience"), EventType.API_ACCESS_DENIED
)
USERINFO_API = BearerApi(
    "userinfo", attrgetter("effective_userinfo_audience"), EventType.API_ACCESS_DENIED
)
LOG_API = BearerApi("log", attrgetter("effective_log_audience"), EventType.API_ACCESS_DENIED)


def bearer_token() -> str | None:
    """The RFC 6750 §2.1 Bearer credential of this request, or ``None``."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def authorize_bearer(api: BearerApi, scope: str) -> BearerGrant:
    """The grant of this request's Bearer token at ``api`` for ``scope`` (see the module
    docstring for the checks). Raises :class:`MissingBearerTokenError`,
    :class:`InvalidBearerTokenError` or :class:`InsufficientScopeError`."""
    token = bearer_token()
    if token is None:
        raise MissingBearerTokenError()
    provider = service(Provider)
    session = request_session()
    try:
        claims = provider.verifier.verify_access_token(token)
    except InvalidTokenError as exc:
        raise InvalidBearerTokenError(exc.description, exc.code) from None
    if _meant_elsewhere(api, scope, claims, provider.settings):
        raise InvalidBearerTokenError(
            "The token is meant for another audience.", "invalid_audience"
        )
    problem = provider.token_state.access_token_problem(claims)
    if problem is not None:
        raise InvalidBearerTokenError(problem.description, problem.code)
    user = None
    if claims["sub"] != claims["client_id"]:  # issued to a user: that user must still be one
        user = session.scalar(select(User).where(User.sub == claims["sub"]))
        if user is None or user.disabled:
            raise InvalidBearerTokenError("The token's user is disabled or gone.", "user_disabled")
    grant = BearerGrant(token, claims, user)
    if scope not in grant.scopes:
        raise InsufficientScopeError(scope, grant)
    return grant


def _meant_elsewhere(
    api: BearerApi, scope: str, claims: dict[str, Any], settings: Settings
) -> bool:
    """Whether the token's ``aud`` rules it out at ``api`` (RFC 9068 §4: ``invalid_token``).

    It does when it does not name the API's audience, except for a token minted for Echo's own
    APIs (its ``aud`` names only its client and Echo's API audiences) that lacks ``scope``: its
    audience is missing because the scope is (``idp.provider.access_token_audience``), so the
    scope check answers it, 403 ``insufficient_scope``, as at an API whose audience it names.
    """
    held = audiences_of(claims)
    if api.audience(settings) in held:
        return False
    echo_only = held <= {
        str(claims["client_id"]),
        settings.effective_api_audience,
        settings.effective_log_audience,
        settings.effective_userinfo_audience,
    }
    lacks_scope = scope not in str(claims.get("scope", "")).split()
    return not (echo_only and lacks_scope)


def bearer_error_response(exc: EchoError) -> Response:
    """The JSON answer to a refused call: the error's code, status and description, and the
    headers a :class:`BearerError` builds (its RFC 6750 challenge). The one rendering of a
    bearer refusal: :func:`refuse` uses it, and so does any API that refuses without recording
    (``/metrics``)."""
    response = jsonify(
        error=exc.code, error_description=exc.description, request_id=current_request_id()
    )
    response.status_code = exc.status
    if isinstance(exc, BearerError):
        response.headers.update(exc.headers())
    return response


def refuse(
    api: BearerApi,
    exc: EchoError,
    *,
    grant: BearerGrant | None = None,
    user: str | None = None,
    details: dict[str, Any] | None = None,
) -> Response:
    """Record a refused call at ``api`` (aggregated per window, committed before the answer)
    and render it.

    ``grant`` defaults to the one the error carries. ``user`` is the ``sub`` of an *existing*
    user the call was about (default: the grant's user); never a value taken from the request
    unchecked, so refusals insert no pseudonym row for strings that are not users. Work the
    request did before the refusal is rolled back.
    """
    if grant is None and isinstance(exc, BearerError):
        grant = exc.grant
    session = request_session()
    session.rollback()
    settings = service(Settings)
    record_refusal(
        session,
        api.denied_event,
        reason=exc.reason if isinstance(exc, BearerError) else exc.code,
        window_seconds=settings.audit_refusal_window,
        context=request_context(),
        client_id=grant.client_id if grant else None,
        user=user or (grant.user_sub if grant else None),
        token=bearer_token(),
        details={"api": api.name, **(details or {})},
        audit=service(AuditTrail),
    )
    session.commit()
    return bearer_error_response(exc)
