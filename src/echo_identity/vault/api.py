"""The service API under /api/v1: backend services fetch fresh third-party tokens.

Callers present an access token issued by Echo Identity (Bearer) with scope ``vault:read``
(``vault:revoke`` to disconnect); their client must also be registered for the provider
(``clients create --vault-provider NAME``). Every call, allowed or denied, is audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType
from echo_identity.audit.service import record
from echo_identity.crypto.aead import DecryptionError
from echo_identity.db import request_session
from echo_identity.errors import EchoError
from echo_identity.idp.bearer import bearer_token, presented_claims, token_scopes
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.models import OAuthClient
from echo_identity.idp.provider_state import current_provider
from echo_identity.vault.errors import (
    StoredTokenUnreadableError,
    VaultAccessDeniedError,
    VaultError,
)
from echo_identity.vault.openapi import openapi_document
from echo_identity.vault.runtime import current_vault
from echo_identity.web.context import request_context
from echo_identity.web.csrf import csrf_exempt

bp = Blueprint("vault_api", __name__, url_prefix="/api/v1")


class InsufficientScopeError(EchoError):
    """RFC 6750 §3.1 ``insufficient_scope``."""

    code = "insufficient_scope"
    status = 403
    description = "The access token lacks the scope this call needs."


class InvalidBodyError(EchoError):
    code = "invalid_request"
    status = 400
    description = 'Send a JSON object: {"min_ttl": seconds (0-3600), "force_refresh": bool}.'


class UnknownUserError(EchoError):
    code = "unknown_user"
    status = 404
    description = "No user has that subject."


@dataclass(frozen=True)
class Caller:
    client_id: str
    providers: list[str]
    token: str


def _caller(scope: str) -> Caller:
    """The authenticated calling client; raises :class:`InvalidTokenError` or
    :class:`InsufficientScopeError`."""
    claims = presented_claims()
    if scope not in token_scopes(claims):
        raise InsufficientScopeError(f"The access token lacks the {scope} scope.")
    providers = request_session().scalar(
        select(OAuthClient.vault_providers).where(OAuthClient.client_id == claims["client_id"])
    )
    return Caller(str(claims["client_id"]), list(providers or []), bearer_token() or "")


def _user(sub: str) -> User:
    user = request_session().scalar(select(User).where(User.sub == sub))
    if user is None or user.disabled:
        raise UnknownUserError()
    return user


def _denied(
    event: EventType, exc: EchoError, sub: str, provider: str | None, caller: Caller | None
) -> Response:
    """Audit a refused call (committed before the answer) and render the error."""
    session = request_session()
    session.rollback()
    record(
        session,
        EventType.VAULT_TOKEN_DENIED,
        context=request_context(),
        outcome="failure",
        user=sub[:128],
        client_id=caller.client_id if caller else None,
        token=bearer_token(),
        details={"provider": provider, "error": exc.code, "operation": str(event)},
    )
    session.commit()
    response = jsonify(error=exc.code, error_description=exc.description)
    response.status_code = exc.status
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = f'Bearer error="{exc.code}"'
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document(current_provider().settings.issuer))


@bp.get("/users/<sub>/connections")
@csrf_exempt
def list_connections(sub: str) -> Response:
    caller: Caller | None = None
    try:
        caller = _caller("vault:read")
        user = _user(sub)
    except EchoError as exc:
        return _denied(EventType.VAULT_CONNECTIONS_LISTED, exc, sub, None, caller)
    vault = current_vault()
    items: list[dict[str, Any]] = [
        {
            "provider": provider.name,
            "status": connection.status,
            "scope": connection.scope,
            "expires_at": connection.expires_at.isoformat() if connection.expires_at else None,
            "connected_at": connection.created_at.isoformat(),
        }
        for connection, provider in vault.connections(user.id)
        if provider.name in caller.providers
    ]
    session = request_session()
    record(
        session,
        EventType.VAULT_CONNECTIONS_LISTED,
        context=request_context(),
        client_id=caller.client_id,
        user=user.sub,
        token=caller.token,
    )
    session.commit()
    return jsonify(connections=items)


@bp.post("/users/<sub>/connections/<provider_name>/token")
@csrf_exempt
def fetch_token(sub: str, provider_name: str) -> Response:
    caller: Caller | None = None
    try:
        caller = _caller("vault:read")
        body = request.get_json(silent=True, force=True) if request.data else {}
        if not isinstance(body, dict):
            raise InvalidBodyError()
        min_ttl, force = body.get("min_ttl", 60), body.get("force_refresh", False)
        if not isinstance(min_ttl, int) or isinstance(min_ttl, bool) or not 0 <= min_ttl <= 3600:
            raise InvalidBodyError()
        if not isinstance(force, bool):
            raise InvalidBodyError()
        if provider_name not in caller.providers:
            raise VaultAccessDeniedError()
        user = _user(sub)
        vault = current_vault()
        provider = vault.providers.require(provider_name)
        try:
            token = vault.fresh_token(
                user,
                provider,
                min_ttl=min_ttl,
                force=force,
                context=request_context(),
                client_id=caller.client_id,
            )
        except DecryptionError:
            raise StoredTokenUnreadableError() from None
    except (EchoError, InvalidTokenError) as exc:
        return _denied(EventType.VAULT_TOKEN_READ, exc, sub, provider_name, caller)
    session = request_session()
    record(
        session,
        EventType.VAULT_TOKEN_READ,
        context=request_context(),
        client_id=caller.client_id,
        user=user.sub,
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
    caller: Caller | None = None
    try:
        caller = _caller("vault:revoke")
        if provider_name not in caller.providers:
            raise VaultAccessDeniedError()
        user = _user(sub)
        vault = current_vault()
        vault.disconnect(
            user,
            vault.providers.require(provider_name),
            context=request_context(),
            client_id=caller.client_id,
        )
    except (EchoError, VaultError) as exc:
        return _denied(EventType.VAULT_CONNECTION_REVOKED, exc, sub, provider_name, caller)
    return "", 204
