"""/introspect — token introspection (RFC 7662) for confidential clients.

A client may introspect tokens issued to it, and access tokens whose audience names it.
Anything else, like an unknown, expired or revoked token, answers ``{"active": false}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Response

from echo_identity.audit.events import EventType
from echo_identity.audit.service import record_for_request
from echo_identity.idp.clients import AuthlibClient
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.endpoints.client_request import checked_endpoint_response
from echo_identity.idp.presented import PresentedToken, find_presented_token
from echo_identity.idp.provider import Provider
from echo_identity.idp.tokens import audiences_of
from echo_identity.web.context import request_session
from echo_identity.web.csrf import csrf_exempt


class EchoIntrospectionEndpoint(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]

    @property
    def provider(self) -> Provider:
        provider: Provider = self.server.provider
        return provider

    def query_token(self, token_string: str, token_type_hint: str | None) -> PresentedToken | None:
        """The presented token (``None``: not one of ours), its introspection recorded and
        committed before the answer."""
        token = find_presented_token(
            request_session(), self.provider, token_string, token_type_hint
        )
        record_for_request(
            EventType.TOKEN_INTROSPECTED,
            client_id=token.client_id if token else None,
            token=token_string,
            outcome="success" if token and token.active else "failure",
        )
        return token

    def check_permission(
        self, token: PresentedToken, client: AuthlibClient, request: OAuth2Request
    ) -> bool:
        if token.client_id == client.get_client_id():
            return True
        return bool(audiences_of(token.claims) & client.identities())

    def introspect_token(self, token: PresentedToken) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "active": True,
            "client_id": token.client_id,
            "scope": token.scope,
            "token_type": "Bearer" if token.kind == "access_token" else "refresh_token",
            "iss": self.provider.settings.issuer,
        }
        for claim in ("sub", "exp", "iat", "aud", "jti", "auth_time"):
            if token.claims.get(claim) is not None:
                payload[claim] = token.claims[claim]
        return payload


@bp.post("/introspect")
@csrf_exempt
def introspect() -> Response:
    return checked_endpoint_response("introspection")
