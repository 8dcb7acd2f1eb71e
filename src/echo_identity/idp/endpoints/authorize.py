"""/authorize — the authorization endpoint (RFC 6749 §3.1, OIDC Core §3.1.2).

Order matters for safety:

1. the ``client_id`` and ``redirect_uri`` are checked *before* anything else; if either is
   wrong the user sees an error page and is never redirected (RFC 9700 §4.1);
2. ``prompt=login`` / ``max_age`` end a stale session and send the user to /login, which
   brings them back here; anonymous users go to /login the same way (``prompt=none`` instead
   gets ``login_required``);
3. Authlib validates the rest (response type, scope, PKCE, nonce, prompt);
4. scopes the user has not granted this client yet (or ``prompt=consent``) get the consent
   page, whose form posts back here with ``decision=allow|deny``.

A request that issues a code commits once, after the response is made: the consent it
granted (if any), the code and their audit events together.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from flask import Response, redirect, render_template, request
from werkzeug.wrappers import Response as WerkzeugResponse

from echo_identity.accounts.current import current_user
from echo_identity.accounts.session_cookie import current_session
from echo_identity.audit.events import EventType
from echo_identity.audit.service import AuditTrail, record_for_request
from echo_identity.idp.consents import Consents
from echo_identity.idp.endpoints.blueprint import bp
from echo_identity.idp.owner import ResourceOwner
from echo_identity.idp.provider import EchoAuthorizationServer, Provider
from echo_identity.web.context import request_context, request_session, service
from echo_identity.web.errors import error_response

SCOPE_DESCRIPTIONS = {
    "openid": "Confirm who you are (your account identifier)",
    "profile": "See your username",
    "email": "See your e-mail address",
    "offline_access": "Keep access while you are away (refresh tokens)",
}
# Parameters carried from the authorization request into the consent form.
_CARRIED = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "login_hint",
)


def _authorize_url(drop_prompt_login: bool = False) -> str:
    params = [(k, v) for k, v in request.args.items(multi=True)]
    if drop_prompt_login:
        params = [(k, v) for k, v in params if k not in {"prompt", "max_age"}]
        prompts = [p for p in request.args.get("prompt", "").split() if p != "login"]
        if prompts:
            params.append(("prompt", " ".join(prompts)))
    return "/authorize?" + urlencode(params)


def _redirect_error(error: OAuth2Error) -> Response:
    """The error redirect to the client, with ``iss`` as RFC 9207 requires for errors too."""
    provider = service(Provider)
    response: Response = provider.server.handle_error_response(request, error)
    location = response.headers.get("Location")
    if location:
        response.headers["Location"] = add_params_to_uri(
            location, {"iss": provider.settings.issuer}
        )
    return response


def _needs_fresh_login(auth_time: int | None) -> bool:
    prompts = request.args.get("prompt", "").split()
    if "login" in prompts:
        return True
    max_age = request.args.get("max_age", "")
    if max_age.isdigit() and auth_time is not None:
        return time.time() - auth_time > int(max_age)
    return False


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Response | WerkzeugResponse | str | tuple[str, int]:
    provider = service(Provider)
    params = request.values
    client = provider.client(params.get("client_id"))
    if client is None:
        return error_response(
            "invalid_client",
            400,
            "This application is not registered (unknown or disabled client_id).",
        )
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is not None and not client.check_redirect_uri(redirect_uri):
        return error_response(
            "invalid_redirect_uri",
            400,
            "The redirect_uri is not registered for this application.",
        )
    if redirect_uri is None and client.get_default_redirect_uri() is None:
        return error_response("invalid_request", 400, "The redirect_uri parameter is required.")

    user = current_user()
    auth_time = current_session().get("auth_time")
    prompts = params.get("prompt", "").split()
    if request.method == "GET" and user is not None and _needs_fresh_login(auth_time):
        current_session().end()
        return redirect("/login?" + urlencode({"next": _authorize_url(drop_prompt_login=True)}))
    if user is None and "none" not in prompts:
        return redirect("/login?" + urlencode({"next": _authorize_url()}))

    owner = ResourceOwner(user, auth_time) if user is not None else None
    server = provider.server
    try:
        grant = server.get_consent_grant(end_user=owner)
        if owner is None:  # prompt=none for a non-OpenID request: Authlib leaves this to us
            raise LoginRequiredError(redirect_uri=grant.redirect_uri)
    except OAuth2Error as error:
        if error.redirect_uri:
            error.state = params.get("state")
            return _redirect_error(error)
        return error_response(error.error, 400, error.description or "Invalid request.")

    consents = Consents(request_session(), service(AuditTrail))
    requested = grant.request.scope
    missing = consents.missing(owner.user.id, client.client_id, requested)
    if request.method == "POST":
        if request.form.get("decision") == "allow":
            consents.grant(owner.user, client.client_id, requested, context=request_context())
            return _issue_code(server, owner, grant)
        record_for_request(
            EventType.AUTHORIZATION_DENIED,
            outcome="failure",
            user=owner.user.sub,
            client_id=client.client_id,
        )
        denied: Response = server.create_authorization_response(grant_user=None, grant=grant)
        return denied
    if missing or "consent" in prompts:
        if "none" in prompts:
            consent_error = ConsentRequiredError(redirect_uri=grant.redirect_uri)
            consent_error.state = params.get("state")
            return _redirect_error(consent_error)
        return render_template(
            "idp/consent.html",
            client_name=client.row.name,
            scopes=[(s, SCOPE_DESCRIPTIONS.get(s, s)) for s in requested.split()],
            params=[(k, params[k]) for k in _CARRIED if k in params],
        )
    return _issue_code(server, owner, grant)


def _issue_code(server: EchoAuthorizationServer, owner: ResourceOwner, grant: Any) -> Response:
    """The authorization response for ``owner``: the redirect with a code (which the grant
    adds to the request's session with its audit event), or an error redirect; then the one
    commit of what the request changed."""
    issued: Response = server.create_authorization_response(grant_user=owner, grant=grant)
    request_session().commit()
    return issued
