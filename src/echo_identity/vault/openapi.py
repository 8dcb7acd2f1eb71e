"""The OpenAPI 3.1 description of the /api/v1 vault surface."""

from __future__ import annotations

from typing import Any

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


def openapi_document(issuer: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Echo Identity token vault",
            "version": "1",
            "description": "Fresh third-party OAuth tokens for authorised backend services.",
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
                    "(vault:revoke for DELETE).",
                },
            },
            "schemas": {
                "Error": _ERROR,
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
        },
    }
