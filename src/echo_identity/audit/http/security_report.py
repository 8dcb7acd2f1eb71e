"""The security report as an admin page: ``GET /admin/security-report?since=7d``.

Only signed-in users with ``is_admin`` see it (others get 403, visitors are sent to sign in).
It is the same document as ``echo-identity report --format html``, linked to the app's
stylesheet; its charts are inline SVG, so the page passes the Content-Security-Policy.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, request, url_for

from echo_identity.accounts.current import current_user, login_required
from echo_identity.audit.errors import InvalidWindowError
from echo_identity.config import Settings
from echo_identity.db import Database, utcnow
from echo_identity.reports.html import render_report_html
from echo_identity.reports.security_report import ReportPolicy, SecurityReportBuilder
from echo_identity.reports.window import parse_since
from echo_identity.web.context import service

bp = Blueprint("audit_admin", __name__, url_prefix="/admin")


@bp.get("/security-report")
@login_required
def security_report() -> Response:
    user = current_user()
    if user is None or not user.is_admin:
        abort(403)
    now = utcnow()
    try:
        since = parse_since(request.args.get("since", "7d"), now)
    except ValueError as exc:
        raise InvalidWindowError(str(exc)) from None
    policy = ReportPolicy.from_settings(service(Settings))
    with service(Database).read_session() as session:
        report = SecurityReportBuilder(session, policy).build(since, now)
    page = render_report_html(report, stylesheet=url_for("static", filename="style.css"))
    return Response(page, mimetype="text/html")
