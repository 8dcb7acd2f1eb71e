"""The service API under /api/v1: backend services fetch fresh third-party tokens.

The caller presents an Echo Identity access token for the API audience (``ECHO_API_AUDIENCE``)
with ``vault:read`` (``vault:revoke`` to disconnect), checked by the one bearer decision
(:func:`~echo_identity.idp.bearer.authorize_bearer`); whose connections it may then touch is
decided by :class:`~echo_identity.vault.access.VaultAccess` (docs/vault.md "Who may fetch whose
token"): every refusal there is the same 403 ``access_denied``, whether the user exists or not,
so the API cannot be used to enumerate users.

Every call is audited: allowed ones as ``vault.token.read`` / ``vault.connections.listed`` /
``vault.connection.revoked`` (committed once, before the response), refusals as
``vault.token.denied`` (aggregated per window, see :func:`~echo_identity.idp.bearer.refuse`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from echo_identity.audit.events import EventType
from echo_identity.audit.service import record_for_request
from echo_identity.config import Settings
from echo_identity.crypto.aead import DecryptionError
from echo_identity.errors import EchoError
from echo_identity.idp.bearer import VAULT_API, authorize_bearer, refuse
from echo_identity.idp.bearer_grant import BearerGrant
from echo_identity.idp.errors import BearerError
from echo_identity.vault.errors import InvalidTokenRequestError, StoredTokenUnreadableError
from echo_identity.vault.runtime import VaultRuntime
from echo_identity.vault.service import VaultService
from echo_identity.web.context import (
    commit_request_session,
    reading_request_session,
    request_context,
    request_session,
    service,
)
from echo_identity.web.csrf import csrf_exempt
from echo_identity.web.json_input import parse_json
from echo_identity.web.openapi import openapi_document

bp = Blueprint("vault_api", __name__, url_prefix="/api/v1")
MAX_MIN_TTL = 3600


def _vault() -> VaultService:
    """The vault on the request's session, begun as a read: handing out a token that needs no
    refresh writes nothing but its audit event, which then goes through the group commit
    after the read ends; a refresh takes its own write transaction (``VaultService._locked``)."""
    return service(VaultRuntime).service(reading_request_session())


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
    user = _vault().access.existing_sub(sub) if accepted is not None else None
    commit_request_session()  # end the read: the refusal is written in a transaction of its own
    return refuse(
        VAULT_API,
        exc,
        grant=grant,
        user=user,
        details={"provider": provider, "operation": str(operation)},
    )


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document(service(Settings).issuer))


@bp.get("/users/<sub>/connections")
@csrf_exempt
def list_connections(sub: str) -> Response:
    grant: BearerGrant | None = None
    try:
        grant = authorize_bearer(VAULT_API, "vault:read")
        vault = _vault()
        user, providers = vault.access.reach(grant, sub)
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
        for connection, provider in vault.connections(user.id)
        if provider.name in providers
    ]
    commit_request_session()  # end the read; the event needs no other change
    record_for_request(
        EventType.VAULT_CONNECTIONS_LISTED, client_id=grant.client_id, user=sub, token=grant.token
    )
    return jsonify(connections=items)


@bp.post("/users/<sub>/connections/<provider_name>/token")
@csrf_exempt
def fetch_token(sub: str, provider_name: str) -> Response:
    grant: BearerGrant | None = None
    try:
        grant = authorize_bearer(VAULT_API, "vault:read")
        vault = _vault()
        user = vault.access.target(grant, sub, provider_name)
        min_ttl, force = _token_request()
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
    commit_request_session()  # end the read (a refresh committed already); group commit
    record_for_request(
        EventType.VAULT_TOKEN_READ,
        client_id=grant.client_id,
        user=sub,
        token=token.access_token,
        details={"provider": provider_name, "refreshed": token.refreshed},
    )
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
        vault = _vault()
        user = vault.access.target(grant, sub, provider_name)
        vault.disconnect(
            user,
            vault.providers.require(provider_name),
            context=request_context(),
            client_id=grant.client_id,
        )
    except EchoError as exc:
        return _denied(EventType.VAULT_CONNECTION_REVOKED, exc, sub, provider_name, grant)
    request_session().commit()  # the service recorded vault.connection.revoked
    return "", 204
