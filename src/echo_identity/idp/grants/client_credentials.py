"""Client credentials grant (RFC 6749 §4.4): confidential clients acting on their own behalf."""

from __future__ import annotations

from typing import ClassVar

from authlib.oauth2.rfc6749 import grants


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]
