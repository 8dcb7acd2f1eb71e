"""Login, logout and the account pages (thin: parse, call the service, render)."""

from __future__ import annotations

from flask import Blueprint, Flask, abort, redirect, render_template, request
from flask_limiter import RequestLimit
from werkzeug.wrappers import Response as WerkzeugResponse

from echo_identity.accounts.credentials import SESSION_EPOCH_KEY, credentials_epoch
from echo_identity.accounts.current import (
    account_service,
    current_user,
    login_required,
    session_store,
    signed_in_user,
)
from echo_identity.accounts.errors import (
    AccountError,
    InvalidCredentialsError,
    WrongCurrentPasswordError,
)
from echo_identity.accounts.session_cookie import current_session
from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.refusals import record_refusal
from echo_identity.audit.screen_refusals import audit_refusals_of
from echo_identity.audit.service import AuditTrail, record_for_request
from echo_identity.config import Settings
from echo_identity.logs import get_logger
from echo_identity.web import rate_limits
from echo_identity.web.context import (
    commit_request_session,
    reading_request_session,
    release_request_session,
    request_context,
    request_session,
    service,
)
from echo_identity.web.rate_limits import login_limit
from echo_identity.web.redirects import safe_next

bp = Blueprint("accounts", __name__)
log = get_logger("echo_identity.accounts")


def init_app(app: Flask) -> None:
    """Register the sign-in and account pages; a sign-in the input screen refuses is still a
    failed sign-in for detection (audited like one)."""
    app.register_blueprint(bp)
    for path in ("/login", "/account/password"):
        audit_refusals_of(app, path, EventType.LOGIN_FAILURE)


@bp.get("/")
def index() -> WerkzeugResponse:
    return redirect("/account" if current_user() else "/login")


def record_lockout(limit: RequestLimit) -> None:
    """Audit a password check refused by the rate limit (``auth.login.locked``): sign-in, and
    every page that asks for the current password again (password change, export, account
    deletion). Committed before the 429 is sent; returns ``None`` so Flask-Limiter renders
    its usual answer.

    Aggregated per address (``audit.refusals``): a guesser hammering a closed door costs one
    event per window plus its count, not a row per attempt."""
    session = request_session()
    record_refusal(
        session,
        EventType.LOGIN_LOCKED,
        reason="login_rate_limited",
        window_seconds=service(Settings).audit_refusal_window,
        context=request_context(),
        severity=Severity.WARNING,
        details={"limit": str(limit.limit)},
        audit=service(AuditTrail),
    )
    session.commit()


@bp.route("/login", methods=["GET", "POST"])
@rate_limits.limit(login_limit, methods=["POST"], on_breach=record_lockout)
def login() -> str | WerkzeugResponse | tuple[str, int]:
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        if current_user() is not None:
            return redirect(next_url)
        return render_template("accounts/login.html", next_url=next_url, error=None)

    username = request.form.get("username", "")
    accounts = account_service()
    try:
        # Hashes with no transaction open; returns under the write lock, committed below.
        user = accounts.authenticate(username, request.form.get("password", ""))
    except InvalidCredentialsError as exc:
        # The account if the name is one (its pseudonym), else a keyed digest of what was
        # typed: a password typed into the name field must never reach the audit trail.
        reading_request_session()
        known = accounts.find(username) if len(username) <= 256 else None
        known_sub = known.sub if known else None
        commit_request_session()  # end the read: the refusal changes nothing (group commit)
        typed = {} if known_sub else {"typed_name": service(Pseudonyms).of_typed_name(username)}
        record_for_request(
            EventType.LOGIN_FAILURE, outcome="failure", user=known_sub, details=typed
        )
        log.info("login_failed", reason=exc.code)
        page = render_template(
            "accounts/login.html",
            next_url=next_url,
            error=exc.description,
            username=username[:64],
        )
        return page, exc.status
    current_session().start_login(user.id)
    current_session()[SESSION_EPOCH_KEY] = credentials_epoch(user)
    record_for_request(EventType.LOGIN_SUCCESS, user=user.sub)  # commits the rehash with it
    log.info("login_succeeded", user_sub=user.sub)
    return redirect(next_url)


@bp.get("/account")
@login_required
def account() -> str:
    return render_template("accounts/account.html", user=current_user())


@bp.get("/account/sessions")
@login_required
def sessions() -> str:
    user = signed_in_user()
    current = current_session().record
    return render_template(
        "accounts/sessions.html",
        sessions=session_store().for_user(user.id),
        current_sid=current.sid if current else None,
    )


@bp.post("/account/sessions/<sid>/end")
@login_required
def end_session(sid: str) -> WerkzeugResponse:
    user = signed_in_user()
    store = session_store()
    record = store.get(sid)
    if record is None or record.user_id != user.id:
        abort(404)
    current = current_session().record
    if current is not None and current.sid == sid:
        current_session().end()
        return redirect("/login")
    release_request_session()  # the store writes through its own connection
    store.delete(sid)
    return redirect("/account/sessions")


@bp.route("/account/password", methods=["GET", "POST"])
@rate_limits.limit(login_limit, methods=["POST"], on_breach=record_lockout)
@login_required
def change_password() -> str | WerkzeugResponse | tuple[str, int]:
    """The signed-in user's own password change: every other session, code and token of the
    user ends; this browser stays signed in under a fresh session id."""
    user = signed_in_user()
    if request.method == "GET":
        changed = request.args.get("changed") == "1"
        return render_template("accounts/password.html", error=None, changed=changed)
    try:
        revoked = account_service().change_password(
            user,
            request.form.get("current_password", ""),
            request.form.get("new_password", ""),
            request.form.get("new_password_confirmation", ""),
            sessions=session_store(),
            context=request_context(),
        )
    except WrongCurrentPasswordError as exc:
        # Recorded like a failed sign-in: the brute-force rules see a guesser behind a session.
        record_for_request(
            EventType.LOGIN_FAILURE,
            outcome="failure",
            user=user.sub,
            details={"via": "password_change"},
        )
        return _password_refused(exc)
    except AccountError as exc:
        return _password_refused(exc)
    # Every session of the user is gone, this one too: bind this browser anew.
    current_session().start_login(user.id)
    current_session()[SESSION_EPOCH_KEY] = credentials_epoch(user)
    log.info("password_changed", user_sub=user.sub, **revoked.counts())
    return redirect("/account/password?changed=1")


def _password_refused(exc: AccountError) -> tuple[str, int]:
    log.info("password_change_refused", reason=exc.code)
    page = render_template("accounts/password.html", error=exc.description, changed=False)
    return page, exc.status
