"""``/account/export`` and ``/account/delete``: the signed-in user's own export and erasure
(thin: parse, re-authenticate, call :mod:`~echo_identity.privacy.export` or
:mod:`~echo_identity.privacy.erasure`, answer).

Both act only on the signed-in user (no form field names a user), need the current password
again (a stolen session alone can neither download the data nor delete the account), a CSRF
token (``web.csrf``) and each form field once. A wrong password is recorded like a failed
sign-in and counts against the sign-in rate limit, as on ``/account/password``.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, render_template, request
from werkzeug.wrappers import Response as WerkzeugResponse

from echo_identity.accounts.current import (
    account_service,
    login_required,
    session_store,
    signed_in_user,
)
from echo_identity.accounts.errors import WrongCurrentPasswordError
from echo_identity.accounts.models import User
from echo_identity.accounts.service import Accounts
from echo_identity.accounts.session_cookie import current_session
from echo_identity.accounts.views import record_lockout
from echo_identity.audit.events import EventType
from echo_identity.audit.screen_refusals import audit_refusals_of
from echo_identity.audit.service import AuditTrail, record_for_request
from echo_identity.db import Database, utcnow
from echo_identity.errors import EchoError
from echo_identity.logs import get_logger
from echo_identity.privacy.erasure import Erasures
from echo_identity.privacy.errors import ConfirmationMismatchError
from echo_identity.privacy.export import stream_export
from echo_identity.vault.runtime import VaultRuntime
from echo_identity.web import rate_limits
from echo_identity.web.context import (
    commit_request_session,
    request_context,
    request_session,
    service,
)
from echo_identity.web.errors import MalformedRequestError
from echo_identity.web.rate_limits import login_limit

bp = Blueprint("privacy", __name__)
log = get_logger("echo_identity.privacy")
EXPORT_FILENAME = "echo-identity-export.json"


def init_app(app: Flask) -> None:
    """Register the export and delete pages; a POST the input screen refuses is recorded
    like a failed sign-in (both check a password)."""
    app.register_blueprint(bp)
    for path in ("/account/export", "/account/delete"):
        audit_refusals_of(app, path, EventType.LOGIN_FAILURE)


def _single_fields() -> None:
    """Raises :class:`MalformedRequestError` when a form field is repeated."""
    if any(len(request.form.getlist(name)) > 1 for name in request.form):
        raise MalformedRequestError("A form field is repeated; send each field once.")


def _reauthenticate(user: User, via: str) -> None:
    """Check the form's current password; a wrong one is recorded as a failed sign-in.

    Raises :class:`WrongCurrentPasswordError`.
    """
    try:
        account_service().confirm_password(user, request.form.get("current_password", ""))
    except WrongCurrentPasswordError:
        record_for_request(
            EventType.LOGIN_FAILURE, outcome="failure", user=user.sub, details={"via": via}
        )
        raise


@bp.route("/account/export", methods=["GET", "POST"])
@rate_limits.limit(login_limit, methods=["POST"], on_breach=record_lockout)
@login_required
def export() -> str | Response | tuple[str, int]:
    """The signed-in user's data as a JSON download, streamed; ``privacy.user.exported`` is
    committed before the first byte."""
    user = signed_in_user()
    if request.method == "GET":
        return render_template("privacy/export.html", error=None)
    try:
        _single_fields()
        _reauthenticate(user, "export")
    except EchoError as exc:
        return render_template("privacy/export.html", error=exc.description), exc.status
    sub = user.sub
    record_for_request(EventType.USER_EXPORTED, user=sub, details={"via": "account"})
    log.info("user_exported", user_sub=sub)
    chunks = stream_export(
        service(Database),
        sub,
        pseudonyms=service(AuditTrail).pseudonyms,
        sessions=session_store(),
        exported_at=utcnow(),
    )
    return Response(
        chunks,
        mimetype="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}"',
            "Cache-Control": "no-store",
        },
    )


@bp.route("/account/delete", methods=["GET", "POST"])
@rate_limits.limit(login_limit, methods=["POST"], on_breach=record_lockout)
@login_required
def delete() -> str | WerkzeugResponse | tuple[str, int]:
    """Erase the signed-in user after re-authentication and their typed username; signs this
    browser out and confirms."""
    user = signed_in_user()
    if request.method == "GET":
        return render_template("privacy/delete.html", error=None)
    try:
        _single_fields()
        _reauthenticate(user, "delete")
        if request.form.get("confirm_username", "") != user.username:
            raise ConfirmationMismatchError()
    except EchoError as exc:
        return render_template("privacy/delete.html", error=exc.description), exc.status
    sub = user.sub
    commit_request_session()  # end the read: the erasure commits step by step
    vault = service(VaultRuntime)
    erasures = Erasures(
        vault=vault,
        accounts=service(Accounts),
        sessions=session_store(),
        keyrings=vault.keyring_for,
        audit=service(AuditTrail),
    )
    outcome = erasures.service(request_session()).erase(
        sub, requested_by="user", context=request_context()
    )
    current_session().end()  # its server side is gone already; expire the cookie
    log.info("user_erased", pseudonym=outcome.pseudonym)
    return render_template("privacy/deleted.html")
