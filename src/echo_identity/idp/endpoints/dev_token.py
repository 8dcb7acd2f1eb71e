"""/test-token — development only: mint an access token without a flow.

This module is imported and its route registered only when ``ECHO_DEV_MODE`` is on
(``idp.app.init_app``); in production the path does not exist (404), so it cannot be switched
on by a request. The token gets the audience a real grant would give it
(:func:`~echo_identity.idp.provider.access_token_audience`).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from echo_identity.idp.errors import UnknownDevClientError
from echo_identity.idp.provider import Provider, access_token_audience
from echo_identity.web.context import service
from echo_identity.web.csrf import csrf_exempt

bp = Blueprint("idp_dev", __name__)


@bp.post("/test-token")
@csrf_exempt
def test_token() -> Response:
    """Raises :class:`UnknownDevClientError` for a missing, unknown or disabled client."""
    provider = service(Provider)
    client = provider.client(request.form.get("client_id"))
    if client is None:
        raise UnknownDevClientError()
    scope = client.get_allowed_scope(request.form.get("scope"))
    access = provider.access_tokens.issue(
        client_id=client.client_id,
        subject=request.form.get("sub") or client.client_id,
        audience=access_token_audience(provider.settings, client, scope),
        scope=scope,
    )
    return jsonify(
        access_token=access.token,
        token_type="Bearer",  # noqa: S106
        expires_in=provider.access_tokens.ttl,
        scope=scope,
    )
