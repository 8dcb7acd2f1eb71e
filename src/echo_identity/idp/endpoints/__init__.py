"""Protocol endpoints, one per module, on one blueprint."""

from __future__ import annotations

from flask import Flask

from echo_identity.audit.events import EventType
from echo_identity.config import Settings
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.provider import EchoAuthorizationServer
from echo_identity.web import hygiene
from echo_identity.web.errors import json_blueprint


def register_endpoints(app: Flask, server: EchoAuthorizationServer, settings: Settings) -> None:
    from echo_identity.idp.endpoints import (  # noqa: F401 - each module adds its routes to bp
        authorize,
        discovery,
        introspect,
        logout,
        revoke,
        token,
        userinfo,
        verify,
    )

    server.register_endpoint(revoke.EchoRevocationEndpoint)
    server.register_endpoint(introspect.EchoIntrospectionEndpoint)
    server.register_endpoint(logout.EchoEndSessionEndpoint)
    app.register_blueprint(bp)
    json_blueprint(app, bp)
    # A token request the input screen refuses is a failed token request: audited, and it
    # spends the failure limit like any other.
    hygiene.audit_refusals_of(
        app,
        "/token",
        EventType.TOKEN_REQUEST_FAILED,
        also=lambda ip: token.failure_limit().spend(ip),
    )
    if settings.dev_mode:
        from echo_identity.idp.endpoints import test_token

        app.register_blueprint(test_token.bp)
        json_blueprint(app, test_token.bp)
