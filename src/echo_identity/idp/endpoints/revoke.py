"""/revoke — token revocation (RFC 7009) for access and refresh tokens.

Revoking a refresh token revokes its whole family (RFC 7009 §2.1: the access tokens of the
same grant go too). Revoking a JWT access token denies its jti at /verify and /introspect
until it expires.

RFC 7009 §2.2: another client's token, and a string we never issued, get the same 200 ``{}``
as a revoked token, and nothing is revoked. Answering otherwise would tell a
caller whether a string it holds is another client's live token. The refused attempt is
recorded as a failed ``oauth.token.revoked`` event, aggregated per window (a caller can
repeat it at line rate).
"""

from __future__ import annotations

from typing import ClassVar

from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc7009 import RevocationEndpoint
from flask import Response

from echo_identity.audit.events import EventType
from echo_identity.audit.refusals import record_refusal
from echo_identity.audit.service import record_for_request
from echo_identity.idp.clients import AuthlibClient
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.endpoints.client_request import checked_endpoint_response
from echo_identity.idp.presented import PresentedToken, find_presented_token
from echo_identity.idp.provider import Provider
from echo_identity.idp.revocation import Revocations
from echo_identity.web.context import request_context, request_session
from echo_identity.web.csrf import csrf_exempt


class EchoRevocationEndpoint(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post", "none"]

    @property
    def provider(self) -> Provider:
        provider: Provider = self.server.provider
        return provider

    def query_token(self, token_string: str, token_type_hint: str | None) -> PresentedToken | None:
        return find_presented_token(request_session(), self.provider, token_string, token_type_hint)

    def authenticate_token(
        self, request: OAuth2Request, client: AuthlibClient
    ) -> PresentedToken | None:
        """The token to revoke, or ``None`` when there is nothing this client may revoke.

        Authlib raises ``invalid_grant`` for another client's token; that answer would differ
        from the one for garbage, so such a token is treated as unknown (and the attempt
        recorded). Raises Authlib's errors for a missing ``token`` or an unknown hint type.
        """
        self.check_params(request, client)
        token: PresentedToken | None = self.query_token(
            request.form["token"], request.form.get("token_type_hint")
        )
        if token is None or token.check_client(client):
            return token
        session = request_session()
        record_refusal(
            session,
            EventType.TOKEN_REVOKED,
            reason="not_token_owner",
            window_seconds=self.provider.settings.audit_refusal_window,
            context=request_context(),
            client_id=client.get_client_id(),
            token=token.raw,
            details={"token_type": token.kind},
            audit=self.provider.audit,
        )
        session.commit()
        return None

    def revoke_token(self, token: PresentedToken, request: OAuth2Request) -> None:
        """Revoke ``token`` (a refresh token: its whole family) and record it, committed
        before the answer."""
        revocations = Revocations(request_session())
        if token.refresh is not None:
            revocations.revoke_family(token.refresh.family_id, "revoked")
        else:
            revocations.revoke_access_token(token.claims["jti"], int(token.claims["exp"]))
        record_for_request(
            EventType.TOKEN_REVOKED,
            client_id=token.client_id,
            # a client-credentials token has the client as sub: not a person, nothing to map
            user=sub if (sub := token.claims.get("sub")) != token.client_id else None,
            token=token.raw,
            details={"token_type": token.kind},
        )


@bp.post("/revoke")
@csrf_exempt
def revoke() -> Response:
    return checked_endpoint_response("revocation")
