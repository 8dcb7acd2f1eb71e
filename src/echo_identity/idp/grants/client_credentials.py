"""Client credentials grant (RFC 6749 §4.4): confidential clients acting on their own behalf.

Scope (RFC 6749 §3.3): no ``scope`` means the client's registered scopes; asking for a scope
the client is not registered for fails with ``invalid_scope`` rather than being ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidScopeError
from authlib.oauth2.rfc6749.hooks import hooked


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [
        "client_secret_basic",
        "client_secret_post",
    ]

    @hooked  # type: ignore[untyped-decorator]
    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        requested = self.request.payload.scope
        scope = self.client.get_allowed_scope(requested)
        if requested and set(requested.split()) - set(scope.split()):
            raise InvalidScopeError("The client is not registered for the requested scope.")
        token: dict[str, Any] = self.generate_token(scope=scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER
