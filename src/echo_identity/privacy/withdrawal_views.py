"""``/account/applications``: the applications a user has authorised, and "Remove access"
(thin: parse, call :class:`~echo_identity.privacy.withdrawal.ApplicationAccess`, render).

Removing access needs the session and its CSRF token, not the password again: it only takes
rights away (like ending a session), so a stolen session gains nothing by it.
"""

from __future__ import annotations

from flask import Blueprint, Flask, redirect, render_template, request
from werkzeug.wrappers import Response as WerkzeugResponse

from echo_identity.accounts.current import login_required, signed_in_user
from echo_identity.audit.service import AuditTrail
from echo_identity.privacy.withdrawal import ApplicationAccess
from echo_identity.web.context import request_context, request_session, service
from echo_identity.web.errors import MalformedRequestError

bp = Blueprint("privacy_withdrawal", __name__)


def init_app(app: Flask) -> None:
    """Register the applications page and its "Remove access" action."""
    app.register_blueprint(bp)


def _access() -> ApplicationAccess:
    return ApplicationAccess(request_session(), service(AuditTrail))


@bp.get("/account/applications")
@login_required
def applications() -> str:
    return render_template(
        "privacy/applications.html",
        applications=_access().applications(signed_in_user()),
        withdrawn=request.args.get("withdrawn") == "1",
    )


@bp.post("/account/applications/<client_id>/withdraw")
@login_required
def withdraw(client_id: str) -> WerkzeugResponse:
    """Raises :class:`~echo_identity.privacy.errors.ApplicationNotAuthorisedError` (404)
    for a client the user has not authorised, and :class:`MalformedRequestError` (400) for a
    repeated form field; neither changes anything."""
    if any(len(request.form.getlist(name)) > 1 for name in request.form):
        raise MalformedRequestError("A form field is repeated; send each field once.")
    _access().withdraw(signed_in_user(), client_id, context=request_context())
    request_session().commit()  # the service recorded privacy.consent.withdrawn
    return redirect("/account/applications?withdrawn=1")
