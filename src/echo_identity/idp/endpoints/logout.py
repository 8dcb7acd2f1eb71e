"""/logout — sign-out, including RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

- ``GET`` with a valid ``id_token_hint``: the browser session ends at once and the user is
  sent to the ``post_logout_redirect_uri`` if it is registered for the token's client (with
  ``state``), else shown the signed-out page.
- ``GET`` without a hint: a confirmation page (nobody can sign a user out by a bare link).
- ``POST`` (CSRF-protected form from our own pages): ends the session.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import Response, redirect, render_template, request
from werkzeug.wrappers import Response as WerkzeugResponse

from echo_identity.accounts.current import current_user
from echo_identity.accounts.session_cookie import current_session
from echo_identity.audit.events import EventType
from echo_identity.audit.service import record
from echo_identity.db import request_session
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.keys import ALGORITHMS, eddsa_allowed
from echo_identity.idp.provider_state import current_provider
from echo_identity.web.context import request_context
from echo_identity.web.errors import error_response


def end_browser_session(client_id: str | None = None) -> None:
    """End the current browser session and audit it (no-op for anonymous visitors)."""
    user = current_user()
    if user is not None:
        session = request_session()
        record(
            session,
            EventType.LOGOUT,
            context=request_context(),
            user=user.sub,
            client_id=client_id,
        )
        session.commit()
    current_session().end()


class EchoEndSessionEndpoint(EndSessionEndpoint):  # type: ignore[misc]
    def get_server_jwks(self) -> dict[str, Any]:
        return current_provider().keys.jwks()

    def get_algorithms(self) -> list[str]:
        return list(ALGORITHMS)

    def end_session(self, end_session_request: Any) -> None:
        client = end_session_request.client
        end_browser_session(client.get_client_id() if client else None)


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Response | WerkzeugResponse | str:
    if request.method == "POST":
        end_browser_session()
        return redirect("/login")
    if not request.args.get("id_token_hint"):
        return render_template("idp/logout_confirm.html", signed_in=current_user() is not None)
    server = current_provider().authorization_server()
    try:
        with eddsa_allowed():
            validated = server.validate_endpoint_request("end_session")
    except OAuth2Error as exc:
        return error_response("invalid_request", 400, exc.description or "Invalid logout request.")
    response: Response | None = server.create_endpoint_response("end_session", validated)
    return response or render_template("idp/signed_out.html")
