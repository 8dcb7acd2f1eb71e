"""Registers the audit trail's HTTP surface on an app (blueprints and hooks only; every
collaborator comes from the services object through ``web.context.service``)."""

from __future__ import annotations

from flask import Flask

from echo_identity.audit.http import events_api, log_endpoint, security_report, well_known
from echo_identity.web.errors import json_blueprint
from echo_identity.web.rate_limits import api_limit, limit_blueprint


def init_app(app: Flask) -> None:
    """``POST /log``, ``GET /api/v1/audit/events`` (scope ``audit:read``),
    ``/.well-known/audit-keys`` and the admin page ``/admin/security-report``."""
    limit_blueprint(log_endpoint.bp, api_limit)
    json_blueprint(app, log_endpoint.bp)
    app.register_blueprint(log_endpoint.bp)
    app.register_blueprint(well_known.bp)
    app.register_blueprint(events_api.bp)
    json_blueprint(app, events_api.bp)
    app.register_blueprint(security_report.bp)
