"""/logout — sign-out, including RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

- ``GET`` with an ``id_token_hint`` that is an ID token we issued (our key, our ``iss``; an
  expired one is fine, §2) whose ``sub`` is the signed-in user: the browser session ends at once
  and the user is sent to the ``post_logout_redirect_uri`` if it is registered for the token's
  client (with ``state``), else shown the signed-out page.
- Any other ``GET`` (no hint, a hint that is not our ID token — an access token, a forged or
  garbled one —, another user's ID token, nobody signed in): a confirmation page. A link must not
  end whichever session it lands in (§6: logout CSRF). The page's form carries the logout
  parameters, so the redirect happens after confirmation too, re-validated then.
- ``POST`` (CSRF-protected form from our own pages): ends the session; it redirects to a valid
  ``post_logout_redirect_uri`` if the form carries one, else to ``/login``.

A ``post_logout_redirect_uri`` is used only with a valid ID-token hint, and only when registered
for its client (the token's ``aud``; a ``client_id`` parameter must name that same client).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from flask import Response, redirect, render_template, request
from werkzeug.wrappers import Response as WerkzeugResponse

from echo_identity.accounts.current import current_user
from echo_identity.accounts.session_cookie import current_session
from echo_identity.audit.events import EventType
from echo_identity.audit.service import record_for_request
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.endpoints.client_request import well_formed
from echo_identity.idp.errors import InvalidTokenError
from echo_identity.idp.provider import Provider
from echo_identity.web.context import service

# The request parameters the confirmation form carries over to its POST.
_CARRIED = ("id_token_hint", "post_logout_redirect_uri", "state", "client_id")
_MAX_PARAMETER = 8192


def end_browser_session(client_id: str | None = None) -> None:
    """End the current browser session and audit it (no-op for anonymous visitors)."""
    user = current_user()
    if user is not None:
        record_for_request(EventType.LOGOUT, user=user.sub, client_id=client_id)
    current_session().end()


class EchoEndSessionEndpoint(EndSessionEndpoint):  # type: ignore[misc]
    @property
    def provider(self) -> Provider:
        provider: Provider = self.server.provider
        return provider

    def _validate_id_token_hint(self, id_token_hint: str) -> dict[str, Any]:
        # Authlib's own check (the only user of its get_server_jwks/get_algorithms hooks) only
        # verifies the signature against our JWKS: it would take one of our access tokens (same
        # keys) as a hint and does not look at ``iss``. Ours does both; expiry is not checked
        # (RP-Initiated Logout §2 accepts expired hints).
        try:
            return self.provider.verifier.verify_id_token(id_token_hint, check_expiry=False)
        except InvalidTokenError as exc:
            raise InvalidRequestError(exc.description) from None

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        client = end_session_request.client
        end_browser_session(client.get_client_id() if client else None)


def _logout_request() -> EndSessionRequest | None:
    """The validated logout request, or ``None`` when its hint or client is not acceptable
    (then nothing about it is trusted: no redirect, and confirmation is needed)."""
    values = request.values
    if any(not well_formed(values.get(name, "")) for name in _CARRIED) or any(
        len(values.get(name, "")) > _MAX_PARAMETER for name in _CARRIED
    ):
        return None  # such bytes must not reach a client lookup
    try:
        validated: EndSessionRequest = service(Provider).server.validate_endpoint_request(
            "end_session"
        )
    except OAuth2Error:
        return None
    return validated


def _hint_is_for_signed_in_user(logout_request: EndSessionRequest | None) -> bool:
    user = current_user()
    claims = logout_request.id_token_claims if logout_request else None
    return user is not None and claims is not None and claims.get("sub") == user.sub


def _finish(logout_request: EndSessionRequest | None) -> Response | WerkzeugResponse | None:
    """End the session; the redirect to the RP when the request has a valid one, else None."""
    if logout_request is None:
        end_browser_session()
        return None
    response: Response | None = service(Provider).server.create_endpoint_response(
        "end_session", logout_request
    )
    return response


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Response | WerkzeugResponse | str:
    logout_request = _logout_request()
    if request.method == "POST":  # CSRF-checked before it gets here
        return _finish(logout_request) or redirect("/login")
    if _hint_is_for_signed_in_user(logout_request):
        return _finish(logout_request) or render_template("idp/signed_out.html")
    redirect_uri = logout_request.redirect_uri if logout_request else None
    carried = (
        {name: request.args[name] for name in _CARRIED if request.args.get(name)}
        if redirect_uri
        else {}
    )
    return render_template(
        "idp/logout_confirm.html",
        signed_in=current_user() is not None,
        returns_to_client=redirect_uri is not None,
        carried=carried,
    )
