"""The OpenAPI 3.1 description of the /api/v1 surface: the vault API and the audit events API."""

from __future__ import annotations

from typing import Any

from echo_identity.audit.event_search import DEFAULT_LIMIT, MAX_LIMIT

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}
_ERRORS = {
    status: {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for status, text in {
        "400": "Invalid request body",
        "401": "Missing, invalid, expired or revoked access token",
        "403": "Insufficient scope, or the client is not allowed for this provider",
        "404": "Unknown user, provider or connection",
        "409": "The user must reconnect the provider (needs_reauth)",
        "502": "The provider failed and no valid token could be returned",
    }.items()
}
_PARAMS = [
    {
        "name": "sub",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The user's subject (the `sub` of their ID tokens).",
    },
]
_PROVIDER = {"name": "provider", "in": "path", "required": True, "schema": {"type": "string"}}
_TEXT = {"type": "string", "maxLength": 128}
_MOMENT = {"type": "string", "format": "date-time"}
_AUDIT_FILTERS = [
    {
        "name": "type",
        "in": "query",
        "schema": _TEXT,
        "description": "An event type, or a prefix ending in `.*` (`auth.login.*`).",
    },
    {"name": "outcome", "in": "query", "schema": _TEXT},
    {"name": "client_id", "in": "query", "schema": _TEXT},
    {"name": "actor", "in": "query", "schema": _TEXT},
    {"name": "since", "in": "query", "schema": _MOMENT, "description": "Inclusive, ISO 8601."},
    {"name": "until", "in": "query", "schema": _MOMENT, "description": "Exclusive, ISO 8601."},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "cursor",
        "in": "query",
        "schema": {"type": "string"},
        "description": "The `next_cursor` of the previous page.",
    },
]
_AUDIT_EVENT = {
    "type": "object",
    "required": ["id", "occurred_at", "event_type", "outcome", "severity"],
    "properties": {
        "id": {"type": "integer"},
        "occurred_at": _MOMENT,
        "event_type": {"type": "string"},
        "outcome": {"type": "string"},
        "severity": {"type": "string", "enum": ["info", "warning", "high"]},
        "actor": {"type": ["string", "null"]},
        "subject": {"type": ["string", "null"], "description": "A pseudonym for people."},
        "client_id": {"type": ["string", "null"]},
        "ip": {"type": ["string", "null"]},
        "user_agent": {"type": ["string", "null"]},
        "request_id": {"type": ["string", "null"]},
        "token_fingerprint": {"type": ["string", "null"], "description": "sha256(token)[:12]"},
        "details": {"type": "object"},
    },
}


def openapi_document(issuer: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Echo Identity API",
            "version": "1",
            "description": "Fresh third-party OAuth tokens for authorised backend services, "
            "and the audit trail for SIEMs and auditors.",
        },
        "servers": [{"url": issuer.rstrip("/") + "/api/v1"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Access token from Echo Identity with vault:read "
                    "(vault:revoke for DELETE; audit:read for /audit/events).",
                },
            },
            "schemas": {
                "Error": _ERROR,
                "AuditEvent": _AUDIT_EVENT,
                "Connection": {
                    "type": "object",
                    "required": ["provider", "status", "scope", "connected_at"],
                    "properties": {
                        "provider": {"type": "string"},
                        "status": {"type": "string", "enum": ["active", "needs_reauth"]},
                        "scope": {"type": "string"},
                        "expires_at": {"type": ["string", "null"], "format": "date-time"},
                        "connected_at": {"type": "string", "format": "date-time"},
                    },
                },
                "TokenRequest": {
                    "type": "object",
                    "properties": {
                        "min_ttl": {
                            "type": "integer",
                            "minimum": 0,
                            "maximum": 3600,
                            "default": 60,
                        },
                        "force_refresh": {"type": "boolean", "default": False},
                    },
                    "additionalProperties": True,
                },
                "Token": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_at", "scope"],
                    "properties": {
                        "access_token": {"type": "string"},
                        "token_type": {"type": "string"},
                        "expires_at": {"type": ["string", "null"], "format": "date-time"},
                        "scope": {"type": "string"},
                    },
                },
            },
        },
        "paths": {
            "/users/{sub}/connections": {
                "get": {
                    "operationId": "listConnections",
                    "summary": "The user's connections to providers this client may use "
                    "(metadata only, never tokens).",
                    "parameters": _PARAMS,
                    "responses": {
                        "200": {
                            "description": "Connections",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "connections": {
                                                "type": "array",
                                                "items": {
                                                    "$ref": "#/components/schemas/Connection"
                                                },
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **{k: v for k, v in _ERRORS.items() if k in {"401", "403", "404"}},
                    },
                },
            },
            "/users/{sub}/connections/{provider}/token": {
                "post": {
                    "operationId": "fetchToken",
                    "summary": "A provider access token valid for at least min_ttl seconds "
                    "(refreshed first when needed).",
                    "parameters": [*_PARAMS, _PROVIDER],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/TokenRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "A fresh token",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Token"}
                                }
                            },
                        },
                        **_ERRORS,
                    },
                },
            },
            "/users/{sub}/connections/{provider}": {
                "delete": {
                    "operationId": "deleteConnection",
                    "summary": "Revoke the tokens at the provider (RFC 7009), then delete them.",
                    "parameters": [*_PARAMS, _PROVIDER],
                    "responses": {
                        "204": {"description": "Revoked and deleted"},
                        **{k: v for k, v in _ERRORS.items() if k != "400"},
                    },
                },
            },
            "/audit/events": {
                "get": {
                    "operationId": "listAuditEvents",
                    "summary": "Audit events, newest first, one page at a time (scope "
                    "audit:read). Each read is itself recorded.",
                    "parameters": _AUDIT_FILTERS,
                    "responses": {
                        "200": {
                            "description": "A page of events",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["events", "next_cursor"],
                                        "properties": {
                                            "events": {
                                                "type": "array",
                                                "items": {
                                                    "$ref": "#/components/schemas/AuditEvent"
                                                },
                                            },
                                            "next_cursor": {"type": ["string", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        "400": {
                            "description": "A query parameter is invalid",
                            "content": _ERRORS["400"]["content"],
                        },
                        "401": _ERRORS["401"],
                        "403": {
                            "description": "The token lacks audit:read",
                            "content": _ERRORS["403"]["content"],
                        },
                    },
                },
            },
        },
    }
