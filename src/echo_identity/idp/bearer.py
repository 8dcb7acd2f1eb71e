"""Bearer access tokens presented to Echo's own APIs (RFC 6750): one authorization decision.

Every bearer-protected API calls :func:`authorize_bearer` with its :class:`BearerApi` and the
scope the call needs, and answers every refusal through :func:`refuse`:

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
2. it is an access token this issuer signed (:class:`~echo_identity.idp.tokens.TokenVerifier`),
   its ``aud`` names the API, it is not revoked and its client is enabled
   (:class:`~echo_identity.idp.revocation.Revocations`), else :class:`InvalidBearerTokenError`
   (401 ``invalid_token``; the audit trail gets the narrower reason);
3. a token issued to a user (its ``sub`` is not its ``client_id``: code or refresh grant)
   belongs to an existing, enabled user, else ``invalid_token``;
4. the scope is granted, else :class:`InsufficientScopeError` (403 ``insufficient_scope``).

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
from echo_identity.config import Settings
from echo_identity.db import request_session
from echo_identity.errors import EchoError
from echo_identity.idp.errors import (
    BearerError,
    InsufficientScopeError,
    InvalidBearerTokenError,
    InvalidTokenError,
    MissingBearerTokenError,
)
from echo_identity.idp.provider_state import current_provider
from echo_identity.idp.revocation import Revocations
from echo_identity.web.context import request_context
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


@dataclass(frozen=True)
class BearerGrant:
    """What an accepted token allows: ``user`` is the user it was issued to (``None`` for a
    client's own client-credentials token)."""

    token: str
    claims: dict[str, Any]
    user: User | None

    @property
    def client_id(self) -> str:
        return str(self.claims["client_id"])

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    @property
    def user_sub(self) -> str | None:
        """The ``sub`` of the token's user (read from the claims: no ORM access needed)."""
        return self.subject if self.user is not None else None

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(str(self.claims.get("scope", "")).split())


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
    provider = current_provider()
    session = request_session()
    try:
        claims = provider.verifier.verify_access_token(token, [api.audience(provider.settings)])
    except InvalidTokenError as exc:
        raise InvalidBearerTokenError(exc.description, exc.code) from None
    problem = Revocations(session).access_token_problem(claims)
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


def bearer_error_response(exc: EchoError) -> Response:
    """The JSON error answer of a refused call, with its RFC 6750 challenge if it has one."""
    response = jsonify(
        error=exc.code, error_description=exc.description, request_id=current_request_id()
    )
    response.status_code = exc.status
    challenge = exc.challenge() if isinstance(exc, BearerError) else None
    if challenge is not None:
        response.headers["WWW-Authenticate"] = challenge
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
    settings = current_provider().settings
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
    )
    session.commit()
    return bearer_error_response(exc)
