"""Discovery (OpenID Connect Discovery 1.0, RFC 8414) and the JWK Set.

Both answer without a store: the metadata comes from settings, the key set from the process's
key cache (``SigningKeys``), which keeps the last set read while the database is unreachable. So
relying parties can still discover us and verify the tokens they hold during a database outage.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from echo_identity.config import Settings
from echo_identity.crypto.jwk import ALGORITHMS
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.provider import STANDARD_SCOPES, Provider
from echo_identity.idp.tokens import ACCESS_TOKEN_ALG
from echo_identity.web.context import service


def metadata() -> dict[str, Any]:
    """Everything we support, and nothing we do not."""
    issuer = service(Settings).issuer
    base = issuer.rstrip("/")
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "userinfo_endpoint": f"{base}/userinfo",
        "jwks_uri": f"{base}/jwks",
        "revocation_endpoint": f"{base}/revoke",
        "introspection_endpoint": f"{base}/introspect",
        "end_session_endpoint": f"{base}/logout",
        "scopes_supported": list(STANDARD_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(ALGORITHMS),
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "azp",
            "preferred_username",
            "updated_at",
            "email",
            "email_verified",
        ],
        "prompt_values_supported": ["none", "login", "consent"],
        "authorization_response_iss_parameter_supported": True,
        "access_token_signing_alg_values_supported": [ACCESS_TOKEN_ALG],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }


@bp.get("/.well-known/openid-configuration")
def openid_configuration() -> Response:
    return jsonify(metadata())


@bp.get("/.well-known/oauth-authorization-server")
def oauth_authorization_server() -> Response:
    return jsonify(metadata())


@bp.get("/jwks")
def jwks() -> Response:
    response = jsonify(service(Provider).keys.jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
