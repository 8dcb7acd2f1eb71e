"""The provider's part of the application: :func:`init_app` registers the grants and protocol
endpoints on the provider's Authlib server and the routes on the Flask app. It builds nothing:
the :class:`~echo_identity.idp.provider.Provider` comes from the wiring point
(``echo_identity.services``)."""

from __future__ import annotations

from typing import Protocol

from flask import Flask

from echo_identity.audit.events import EventType
from echo_identity.audit.screen_refusals import audit_refusals_of
from echo_identity.config import Settings
from echo_identity.idp.endpoints import (
    authorize,  # noqa: F401 - each endpoint module adds its route to the blueprint
    discovery,  # noqa: F401
    introspect,
    logout,
    revoke,
    token,
    userinfo,  # noqa: F401
    verify,  # noqa: F401
)
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.grants.authorization_code import (
    AuthorizationCodeGrant,
    OpenIDCode,
    StrictCodeChallenge,
)
from echo_identity.idp.grants.client_credentials import ClientCredentialsGrant
from echo_identity.idp.grants.refresh_token import RefreshTokenGrant
from echo_identity.idp.provider import Provider
from echo_identity.web.errors import json_blueprint


class ProviderServices(Protocol):
    """What :func:`init_app` needs of the application's services."""

    @property
    def settings(self) -> Settings: ...

    @property
    def provider(self) -> Provider: ...


def init_app(app: Flask, services: ProviderServices) -> None:
    """Serve the provider of ``services`` on ``app``: the code, refresh and client-credentials
    grants, revocation, introspection and RP-initiated logout, the protocol routes, and (in
    development only) ``/test-token``."""
    server = services.provider.server
    server.register_grant(
        AuthorizationCodeGrant,
        [StrictCodeChallenge(required=True), OpenIDCode(services.provider, require_nonce=False)],
    )
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(revoke.EchoRevocationEndpoint)
    server.register_endpoint(introspect.EchoIntrospectionEndpoint)
    server.register_endpoint(logout.EchoEndSessionEndpoint)
    app.register_blueprint(bp)
    json_blueprint(app, bp)
    # A token request the input screen refuses is a failed token request: audited, and it
    # spends the failure limit like any other.
    audit_refusals_of(
        app,
        "/token",
        EventType.TOKEN_REQUEST_FAILED,
        also=lambda ip: token.failure_limit().spend(ip),
    )
    if services.settings.dev_mode:
        # Imported only in development: in production the route does not exist at all.
        from echo_identity.idp.endpoints import dev_token

        app.register_blueprint(dev_token.bp)
        json_blueprint(app, dev_token.bp)
