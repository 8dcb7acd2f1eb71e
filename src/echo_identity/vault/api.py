"""The service API under /api/v1: backend services fetch fresh third-party tokens.

Who may touch whose connection (docs/vault.md "Who may fetch whose token"):

- the caller presents an Echo Identity access token for the API audience
  (``ECHO_API_AUDIENCE``) with ``vault:read`` (``vault:revoke`` to disconnect), checked by the
  one bearer decision (:func:`~echo_identity.idp.bearer.authorize_bearer`);
- its client is registered for the provider (``clients create --vault-provider NAME``);
- a token issued to a user (code or refresh grant) reaches only that user's connections;
- a client's own (client-credentials) token reaches a user's connection only while that user's
  active consent for the provider names the client (:mod:`echo_identity.vault.consents`).

Every refusal of the last three kinds is the same 403 ``access_denied``, whether the user
exists or not, so the API cannot be used to enumerate users. Every call is audited: allowed
ones as ``vault.token.read`` / ``vault.connections.listed`` / ``vault.connection.revoked``,
refusals as ``vault.token.denied`` (aggregated per window, see
:func:`~echo_identity.idp.bearer.refuse`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType
from echo_identity.audit.service import record
from echo_identity.crypto.aead import DecryptionError
from echo_identity.db import request_session
from echo_identity.errors import EchoError
from echo_identity.idp.bearer import VAULT_API, BearerGrant, authorize_bearer, refuse
from echo_identity.idp.errors import BearerError
from echo_identity.idp.models import OAuthClient
from echo_identity.idp.provider_state import current_provider
from echo_identity.vault.errors import (
    InvalidTokenRequestError,
    StoredTokenUnreadableError,
    VaultAccessDeniedError,
)
from echo_identity.vault.openapi import openapi_document
from echo_identity.vault.runtime import current_vault
from echo_identity.web.context import request_context
from echo_identity.web.csrf import csrf_exempt
from echo_identity.web.json_input import parse_json

bp = Blueprint("vault_api", __name__, url_prefix="/api/v1")
MAX_MIN_TTL = 3600


def _reach(grant: BearerGrant, sub: str) -> tuple[User, set[str]]:
    """The user ``sub`` and the providers whose connections of that user ``grant`` may touch.

    Raises :class:`VaultAccessDeniedError` for a token of another user, and for a client's own
    token that no consent of ``sub`` covers (unknown and disabled users included).
    """
    registered = request_session().scalar(
        select(OAuthClient.vault_providers).where(OAuthClient.client_id == grant.client_id)
    )
    providers = set(registered or [])
    if grant.user is not None:  # issued to a user: that user's connections only
        if sub != grant.user_sub:
            raise VaultAccessDeniedError()
        return grant.user, providers
    covered = current_vault().consents.covered_providers(sub, grant.client_id)
    if covered is None or not covered[1] & providers:
        raise VaultAccessDeniedError()
    return covered[0], covered[1] & providers


def _target(grant: BearerGrant, sub: str, provider_name: str) -> User:
    """The user whose ``provider_name`` connection the call touches; raises
    :class:`VaultAccessDeniedError`."""
    user, providers = _reach(grant, sub)
    if provider_name not in providers:
        raise VaultAccessDeniedError()
    return user


def _token_request() -> tuple[int, bool]:
    """``min_ttl`` and ``force_refresh`` of the body; raises
    :class:`~echo_identity.web.json_input.InvalidJsonError` or :class:`InvalidTokenRequestError`.

    ``min_ttl`` is a JSON number with an integral value (``693`` or ``693.0``: a JSON Schema
    integer) from 0 to 3600; booleans, strings and fractions are refused.
    """
    raw = request.get_data(cache=False)
    body = parse_json(raw) if raw.strip() else {}
    if not isinstance(body, dict) or not set(body) <= {"min_ttl", "force_refresh"}:
        raise InvalidTokenRequestError()  # unknown properties too: the schema lists them all
    min_ttl, force = body.get("min_ttl", 60), body.get("force_refresh", False)
    if isinstance(min_ttl, bool) or not isinstance(min_ttl, int | float):
        raise InvalidTokenRequestError()
    if isinstance(min_ttl, float) and not min_ttl.is_integer():
        raise InvalidTokenRequestError()
    if not 0 <= min_ttl <= MAX_MIN_TTL or not isinstance(force, bool):
        raise InvalidTokenRequestError()
    return int(min_ttl), force


def _denied(
    operation: EventType, exc: EchoError, sub: str, provider: str | None, grant: BearerGrant | None
) -> Response:
    """Record a refused call and render it. The path's user is named in the trail only once
    the token was accepted, and only if they exist: refusals never map random strings."""
    accepted = grant or (exc.grant if isinstance(exc, BearerError) else None)
    user = None
    if accepted is not None:
        user = request_session().scalar(select(User.sub).where(User.sub == sub))
    return refuse(
        VAULT_API,
        exc,
        grant=grant,
        user=user,
        details={"provider": provider, "operation": str(operation)},
    )


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document(current_provider().settings.issuer))


@bp.get("/users/<sub>/connections")
@csrf_exempt
def list_connections(sub: str) -> Response:
    grant: BearerGrant | None = None
    try:
        grant = authorize_bearer(VAULT_API, "vault:read")
        user, providers = _reach(grant, sub)
    except EchoError as exc:
        return _denied(EventType.VAULT_CONNECTIONS_LISTED, exc, sub, None, grant)
    items: list[dict[str, Any]] = [
        {
            "provider": provider.name,
            "status": connection.status,
            "scope": connection.scope,
            "expires_at": connection.expires_at.isoformat() if connection.expires_at else None,
            "connected_at": connection.created_at.isoformat(),
        }
        for connection, provider in current_vault().connections(user.id)
        if provider.name in providers
    ]
    session = request_session()
    record(
        session,
        EventType.VAULT_CONNECTIONS_LISTED,
        context=request_context(),
        client_id=grant.client_id,
        user=sub,
        token=grant.token,
    )
    session.commit()
    return jsonify(connections=items)


@bp.post("/users/<sub>/connections/<provider_name>/token")
@csrf_exempt
def fetch_token(sub: str, provider_name: str) -> Response:
    grant: BearerGrant | None = None
    try:
        grant = authorize_bearer(VAULT_API, "vault:read")
        user = _target(grant, sub, provider_name)
        min_ttl, force = _token_request()
        vault = current_vault()
        provider = vault.providers.require(provider_name)
        try:
            token = vault.fresh_token(
                user,
                provider,
                min_ttl=min_ttl,
                force=force,
                context=request_context(),
                client_id=grant.client_id,
            )
        except DecryptionError:
            raise StoredTokenUnreadableError() from None
    except EchoError as exc:
        return _denied(EventType.VAULT_TOKEN_READ, exc, sub, provider_name, grant)
    session = request_session()
    record(
        session,
        EventType.VAULT_TOKEN_READ,
        context=request_context(),
        client_id=grant.client_id,
        user=sub,
        token=token.access_token,
        details={"provider": provider_name, "refreshed": token.refreshed},
    )
    session.commit()
    return jsonify(
        access_token=token.access_token,
        token_type=token.token_type,
        expires_at=token.expires_at.isoformat() if token.expires_at else None,
        scope=token.scope,
    )


@bp.delete("/users/<sub>/connections/<provider_name>")
@csrf_exempt
def delete_connection(sub: str, provider_name: str) -> Response | tuple[str, int]:
    grant: BearerGrant | None = None
    try:
        grant = authorize_bearer(VAULT_API, "vault:revoke")
        user = _target(grant, sub, provider_name)
        vault = current_vault()
        vault.disconnect(
            user,
            vault.providers.require(provider_name),
            context=request_context(),
            client_id=grant.client_id,
        )
    except EchoError as exc:
        return _denied(EventType.VAULT_CONNECTION_REVOKED, exc, sub, provider_name, grant)
    return "", 204
