"""The security report as an admin page: ``GET /admin/security-report?since=7d``.

Only signed-in users with ``is_admin`` see it (others get 403, visitors are sent to sign in).
It is the same document as ``echo-identity report --format html``, linked to the app's
stylesheet; its charts are inline SVG, so the page passes the Content-Security-Policy.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, abort, current_app, request, url_for

from echo_identity.accounts.current import current_user, login_required
from echo_identity.audit.report_html import render_report_html
from echo_identity.audit.reports import ReportPolicy, SecurityReportBuilder, parse_since
from echo_identity.config import Settings
from echo_identity.db import current_database, utcnow
from echo_identity.errors import EchoError

bp = Blueprint("audit_admin", __name__, url_prefix="/admin")


class InvalidWindowError(EchoError):
    code = "invalid_since"
    status = 400
    description = "since must be a duration (30m, 24h, 7d, 2w) or an ISO 8601 date."


@bp.get("/security-report")
@login_required
def security_report() -> Response:
    user = current_user()
    if user is None or not user.is_admin:
        abort(403)
    settings: Settings = current_app.extensions["echo.settings"]
    now = utcnow()
    try:
        since = parse_since(request.args.get("since", "7d"), now)
    except ValueError as exc:
        raise InvalidWindowError(str(exc)) from None
    with current_database().read_session() as session:
        report = SecurityReportBuilder(session, ReportPolicy.from_settings(settings)).build(
            since, now
        )
    page = render_report_html(report, stylesheet=url_for("static", filename="style.css"))
    return Response(page, mimetype="text/html")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
