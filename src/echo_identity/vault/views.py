"""Browser pages: the consented connect flow and the user's connections (thin views)."""

from __future__ import annotations

import time

from flask import Blueprint, redirect, render_template, request
from werkzeug.wrappers import Response as WerkzeugResponse

from echo_identity.accounts.current import login_required, signed_in_user
from echo_identity.accounts.session_cookie import current_session
from echo_identity.crypto.digests import random_token
from echo_identity.vault.consents import CONSENT_TEXT_VERSION
from echo_identity.vault.errors import ConnectStateError, UpstreamError
from echo_identity.vault.runtime import VaultRuntime
from echo_identity.vault.service import VaultService
from echo_identity.web.context import request_context, request_session, service
from echo_identity.web.errors import error_response

bp = Blueprint("vault", __name__)
STATE_TTL_SECONDS = 600


def _vault() -> VaultService:
    return service(VaultRuntime).service(request_session())


@bp.route("/connections/<name>/connect", methods=["GET", "POST"])
@login_required
def connect(name: str) -> str | WerkzeugResponse:
    vault = _vault()
    provider = vault.providers.require(name)
    services = vault.consents.services(provider.name)
    if request.method == "GET":
        return render_template(
            "vault/connect.html",
            provider=provider,
            services=services,
            consent_version=CONSENT_TEXT_VERSION,
        )
    if request.form.get("decision") != "allow":
        return redirect("/account/connections")
    # The consent covers the services the page showed (echoed back in the form) that are still
    # registered: one registered meanwhile was not shown, so it is not covered.
    shown = set(request.form.get("services", "").split())
    state = random_token(32)
    current_session()["vault_connect"] = {
        "state": state,
        "provider": provider.name,
        "started": int(time.time()),
        "services": [s.client_id for s in services if s.client_id in shown],
    }
    return redirect(vault.authorization_url(provider, state, service(VaultRuntime).callback_url))


@bp.get("/connections/callback")
@login_required
def callback() -> WerkzeugResponse:
    pending = current_session().pop("vault_connect", None)
    state = request.args.get("state", "")
    if (
        not pending
        or not state
        or pending.get("state") != state
        or time.time() - pending.get("started", 0) > STATE_TTL_SECONDS
    ):
        raise ConnectStateError()
    if "error" in request.args:
        return error_response(
            "connect_refused",
            400,
            f"The provider did not connect: {request.args.get('error', '')[:100]}.",
        )
    vault = _vault()
    provider = vault.providers.require(pending["provider"])
    user = signed_in_user()
    try:
        vault.complete_connect(
            user,
            provider,
            request.args.get("code", ""),
            state,
            service(VaultRuntime).callback_url,
            context=request_context(),
            client_ids=[str(client_id) for client_id in pending.get("services") or []],
        )
    except UpstreamError as exc:
        return error_response(exc.code, exc.status, exc.description)
    request_session().commit()  # the service recorded vault.connection.created
    return redirect("/account/connections")


@bp.get("/account/connections")
@login_required
def connections() -> str:
    user = signed_in_user()
    vault = _vault()
    return render_template(
        "vault/connections.html",
        connections=vault.connections(user.id),
        providers=vault.providers.list_providers(),
    )


@bp.post("/account/connections/<name>/disconnect")
@login_required
def disconnect(name: str) -> WerkzeugResponse:
    user = signed_in_user()
    vault = _vault()
    vault.disconnect(user, vault.providers.require(name), context=request_context())
    request_session().commit()  # the service recorded vault.connection.revoked
    return redirect("/account/connections")
