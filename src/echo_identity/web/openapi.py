"""The OpenAPI 3.1 description of the /api/v1 surface: the vault API and the audit events API.

The document is a contract both ways: every value it allows is accepted, every value it
forbids is refused with a documented 4xx, and every answer has the documented status, headers
and shape (``tests/functional/security/test_openapi_contract.py`` runs schemathesis with all of
its checks against the served copy). Rules of the whole service that JSON Schema can only say
per value are spelled out on each value: no text may contain a NUL character (input hygiene,
:mod:`echo_identity.web.hygiene`), and a request body is a JSON object with only the listed
properties.

The document is data: it imports no domain (``web`` sits below them all). The few values it
shares with a domain are written out here and pinned equal to the domain's own by
``tests/unit/web/test_openapi.py`` (the audit events API's page sizes and cursor syntax,
:mod:`echo_identity.audit.event_search`).
"""

from __future__ import annotations

from typing import Any

# The audit events API's paging (echo_identity.audit.event_search).
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
CURSOR_PATTERN = "^[1-9][0-9]{0,17}$"

# Any text without NUL (refused everywhere by input hygiene with 400 invalid_request).
_NO_NUL = "^[^\\x00]*$"
_JSON = "application/json"


def _text(**extra: Any) -> dict[str, Any]:
    return {"type": "string", "pattern": _NO_NUL, **extra}


def _error(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_CHALLENGE = {
    "description": "RFC 6750 §3: `Bearer`, with `error` (and `scope` for insufficient_scope).",
    "schema": {"type": "string"},
}
_ERRORS: dict[str, dict[str, Any]] = {
    "400": _error(
        "`invalid_request` (a parameter or body value the schema does not allow; text with a "
        "NUL byte or bytes that are not UTF-8 anywhere in the request), `invalid_json` or "
        "`json_too_deep` (a body that is not JSON, or nested more than 32 levels)"
    ),
    "401": _error(
        "`invalid_request` (no access token) or `invalid_token` (not issued by Echo Identity, "
        "expired, revoked, for another audience, of a disabled client or user)",
        headers={"WWW-Authenticate": {**_CHALLENGE, "required": True}},
    ),
    "403": _error(
        "`insufficient_scope` (the challenge names the scope needed) or `access_denied` (a "
        "valid token that may not touch this resource: another user's, or a user's connection "
        "whose consent does not name this client; unknown users get the same answer)",
        headers={"WWW-Authenticate": _CHALLENGE},
    ),
    "404": _error("`unknown_provider`, `connection_not_found`, or no such path"),
    "409": _error("`needs_reauth`: the user must reconnect the provider"),
    "413": _error("`request_too_large`: the body is larger than 1 MiB"),
    "429": _error(
        "`rate_limited`: too many calls from this address",
        headers={"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}},
    ),
    "502": _error("`upstream_error` or `invalid_grant`: the provider failed; no token"),
}


def _errors(*statuses: str) -> dict[str, dict[str, Any]]:
    return {status: _ERRORS[status] for status in statuses}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _object(
    properties: dict[str, Any], *, required: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    """An object schema with ``properties``, of which ``required`` must be present."""
    schema: dict[str, Any] = {"type": "object"}
    if required:
        schema["required"] = list(required)
    return {**schema, "properties": properties, **extra}


def _array_of(schema_name: str) -> dict[str, Any]:
    """An array of the component schema ``schema_name``."""
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{schema_name}"}}


_SUB = {
    "name": "sub",
    "in": "path",
    "required": True,
    "schema": _text(minLength=1),
    "description": "The user's subject (the `sub` of their ID tokens).",
}
_PROVIDER = {"name": "provider", "in": "path", "required": True, "schema": _text(minLength=1)}
_MOMENT = {"type": "string", "format": "date-time"}
_NULLABLE_MOMENT = {"type": ["string", "null"], "format": "date-time"}
_FILTER = _text(maxLength=128)
_AUDIT_FILTERS = [
    {
        "name": "type",
        "in": "query",
        "schema": _FILTER,
        "description": "An event type, or a prefix ending in `.*` (`auth.login.*`). "
        "Empty: no filter (so for outcome, client_id and actor).",
    },
    {"name": "outcome", "in": "query", "schema": _FILTER},
    {"name": "client_id", "in": "query", "schema": _FILTER},
    {"name": "actor", "in": "query", "schema": _FILTER},
    {
        "name": "since",
        "in": "query",
        "schema": _MOMENT,
        "description": "Inclusive; RFC 3339 with an offset. An instant beyond the years "
        "1-9999 in UTC filters as the nearest one (before or after every event).",
    },
    {"name": "until", "in": "query", "schema": _MOMENT, "description": "Exclusive; as since."},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "cursor",
        "in": "query",
        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
        "description": "The `next_cursor` of the previous page.",
    },
]
_NULLABLE_TEXT = {"type": ["string", "null"]}
_AUDIT_EVENT = _object(
    {
        "id": {"type": "integer"},
        "occurred_at": _MOMENT,
        "event_type": {"type": "string"},
        "outcome": {"type": "string"},
        "severity": {"type": "string", "enum": ["info", "warning", "high"]},
        "actor": _NULLABLE_TEXT,
        "subject": {**_NULLABLE_TEXT, "description": "A pseudonym for people."},
        "client_id": _NULLABLE_TEXT,
        "ip": _NULLABLE_TEXT,
        "user_agent": _NULLABLE_TEXT,
        "request_id": _NULLABLE_TEXT,
        "token_fingerprint": {**_NULLABLE_TEXT, "description": "sha256(token)[:12]"},
        "details": {"type": "object"},
    },
    required=("id", "occurred_at", "event_type", "outcome", "severity"),
)
_SCHEMAS = {
    "Error": _object(
        {
            "error": {"type": "string"},
            "error_description": {"type": "string"},
            "request_id": {"type": "string"},
        },
        required=("error",),
    ),
    "AuditEvent": _AUDIT_EVENT,
    "Connection": _object(
        {
            "provider": {"type": "string"},
            "status": {"type": "string", "enum": ["active", "needs_reauth"]},
            "scope": {"type": "string"},
            "expires_at": _NULLABLE_MOMENT,
            "connected_at": _MOMENT,
        },
        required=("provider", "status", "scope", "connected_at"),
    ),
    "TokenRequest": _object(
        {
            "min_ttl": {
                "type": "integer",
                "minimum": 0,
                "maximum": 3600,
                "default": 60,
                "description": "Seconds the token must stay valid; `693` and `693.0` alike.",
            },
            "force_refresh": {"type": "boolean", "default": False},
        },
        additionalProperties=False,
    ),
    "Token": _object(
        {
            "access_token": {"type": "string"},
            "token_type": {"type": "string"},
            "expires_at": _NULLABLE_MOMENT,
            "scope": {"type": "string"},
        },
        required=("access_token", "token_type", "expires_at", "scope"),
    ),
}
_LIST_CONNECTIONS = {
    "operationId": "listConnections",
    "summary": "The user's connections to providers this client may use "
    "(metadata only, never tokens).",
    "parameters": [_SUB],
    "responses": {
        "200": _ok(
            "Connections",
            _object({"connections": _array_of("Connection")}, required=("connections",)),
        ),
        **_errors("400", "401", "403", "404", "429"),
    },
}
_FETCH_TOKEN = {
    "operationId": "fetchToken",
    "summary": "A provider access token valid for at least min_ttl seconds "
    "(refreshed first when needed).",
    "parameters": [_SUB, _PROVIDER],
    "requestBody": {
        "required": False,
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/TokenRequest"}}},
    },
    "responses": {
        "200": _ok("A fresh token", {"$ref": "#/components/schemas/Token"}),
        **_errors("400", "401", "403", "404", "409", "413", "429", "502"),
    },
}
_DELETE_CONNECTION = {
    "operationId": "deleteConnection",
    "summary": "Revoke the tokens at the provider (RFC 7009), then delete them.",
    "parameters": [_SUB, _PROVIDER],
    "responses": {
        "204": {"description": "Revoked and deleted"},
        **_errors("400", "401", "403", "404", "409", "429", "502"),
    },
}
_LIST_AUDIT_EVENTS = {
    "operationId": "listAuditEvents",
    "summary": "Audit events, newest first, one page at a time (a service's own token with "
    "scope audit:read; a token issued to a user gets 403). Each read is itself recorded.",
    "parameters": _AUDIT_FILTERS,
    "responses": {
        "200": _ok(
            "A page of events",
            _object(
                {
                    "events": _array_of("AuditEvent"),
                    "next_cursor": {"type": ["string", "null"], "pattern": CURSOR_PATTERN},
                },
                required=("events", "next_cursor"),
            ),
        ),
        **_errors("400", "401", "403", "429"),
    },
}


def openapi_document(issuer: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Echo Identity API",
            "version": "1",
            "description": "Fresh third-party OAuth tokens for authorised backend services, "
            "and the audit trail for SIEMs and auditors. Text anywhere in a request (path, "
            "query, headers, body) must be UTF-8 without NUL characters; a request body is a "
            "JSON object with only the documented properties.",
        },
        "servers": [{"url": issuer.rstrip("/") + "/api/v1"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Access token from Echo Identity for the API audience "
                    "(ECHO_API_AUDIENCE) with vault:read (vault:revoke for DELETE; audit:read "
                    "for /audit/events).",
                },
            },
            "schemas": _SCHEMAS,
        },
        "paths": {
            "/users/{sub}/connections": {"get": _LIST_CONNECTIONS},
            "/users/{sub}/connections/{provider}/token": {"post": _FETCH_TOKEN},
            "/users/{sub}/connections/{provider}": {"delete": _DELETE_CONNECTION},
            "/audit/events": {"get": _LIST_AUDIT_EVENTS},
        },
    }
