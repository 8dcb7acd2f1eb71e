"""The application factory: wires each domain's ``init_app`` and nothing else."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from echo_identity import db
from echo_identity.accounts import views as account_views
from echo_identity.accounts.passwords import Passwords
from echo_identity.accounts.session_cookie import ServerSessionInterface
from echo_identity.audit import admin_views as audit_admin_views
from echo_identity.audit import api as audit_api
from echo_identity.audit import metrics as audit_metrics
from echo_identity.audit import views as audit_views
from echo_identity.audit import well_known as audit_well_known
from echo_identity.audit.events import EventType
from echo_identity.config import Settings
from echo_identity.idp import provider as idp_provider
from echo_identity.services import build_services, session_store
from echo_identity.vault import runtime as vault_runtime
from echo_identity.web import errors, headers, health, hygiene, rate_limits, request_id
from echo_identity.web.context import attach_services
from echo_identity.web.csrf import csrf


def create_app(settings: Settings, database: db.Database | None = None) -> Flask:
    """Build the WSGI application for validated ``settings`` (see ``config.load_settings``)."""
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.config.update(
        SECRET_KEY=settings.secret_key_bytes(),
        MAX_CONTENT_LENGTH=1024 * 1024,
        PREFERRED_URL_SCHEME="https" if settings.production else "http",
        WTF_CSRF_TIME_LIMIT=3600,
    )
    app.extensions["echo.settings"] = settings
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )

    services = build_services(settings, database)
    attach_services(app, services)
    database = services.database
    db.init_app(app, database)
    app.extensions["echo.passwords"] = Passwords(
        settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism
    )
    store = session_store(settings, database)
    app.extensions["echo.session_store"] = store
    app.session_interface = ServerSessionInterface(store, secure=settings.production)

    request_id.init_app(app)
    hygiene.init_app(app)  # before any other hook: hostile bytes never reach a view
    headers.init_app(app, production=settings.production)
    errors.init_app(app)
    csrf.init_app(app)
    rate_limits.init_app(app, settings)
    health.init_app(app, settings, database)  # /healthz, /readyz (database, Redis)
    app.register_blueprint(account_views.bp)
    # Refused by the input screen, a sign-in attempt is still a failed sign-in for detection.
    for path in ("/login", "/account/password"):
        hygiene.audit_refusals_of(app, path, EventType.LOGIN_FAILURE)
    idp_provider.init_app(app, settings, database)
    vault_runtime.init_app(app, settings)
    audit_views.init_app(app)
    audit_well_known.init_app(app, settings)  # pseudonym key, /.well-known/audit-keys
    audit_api.init_app(app)  # GET /api/v1/audit/events (scope audit:read)
    audit_admin_views.init_app(app)  # /admin/security-report
    audit_metrics.init_app(app, database)  # /metrics
    return app
