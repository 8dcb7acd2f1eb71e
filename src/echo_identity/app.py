"""The application factory: builds the services once and wires each domain's ``init_app``."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from echo_identity.accounts import views as account_views
from echo_identity.accounts.session_cookie import ServerSessionInterface
from echo_identity.audit.counters import AuditCounters
from echo_identity.audit.http import app as audit_http
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.idp import app as idp_app
from echo_identity.idp.static_bearer import static_bearer_refusal
from echo_identity.privacy import views as privacy_views
from echo_identity.privacy import withdrawal_views
from echo_identity.services import Services, build_services
from echo_identity.vault import app as vault_app
from echo_identity.web import errors, headers, health, hygiene, metrics, rate_limits, request_id
from echo_identity.web.context import attach_services
from echo_identity.web.csrf import csrf


def create_app(
    settings: Settings, database: Database | None = None, *, services: Services | None = None
) -> Flask:
    """Build the WSGI application for validated ``settings`` (see ``config.load_settings``).

    The collaborators are built by :func:`~echo_identity.services.build_services` (on
    ``database`` when given); a test may hand in ``services`` it built for ``settings`` with
    a collaborator replaced (``dataclasses.replace``), and they are used as they are.
    """
    services = services or build_services(settings, database)
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    app.config.update(
        SECRET_KEY=settings.secret_key_bytes(),
        MAX_CONTENT_LENGTH=1024 * 1024,
        PREFERRED_URL_SCHEME="https" if settings.production else "http",
        WTF_CSRF_TIME_LIMIT=3600,
    )
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )

    attach_services(app, services)  # service(Kind) for request code; one DB session a request
    app.session_interface = ServerSessionInterface(services.sessions, secure=settings.production)

    request_id.init_app(app)
    hygiene.init_app(app)  # before any other hook: hostile bytes never reach a view
    headers.init_app(app, production=settings.production)
    errors.init_app(app)
    csrf.init_app(app)
    health.init_app(app)  # /healthz, /readyz (database, Redis)
    account_views.init_app(app)  # /login, /account pages
    idp_app.init_app(app, services)  # the OpenID provider's grants and endpoints
    vault_app.init_app(app)  # connect pages, /api/v1 vault API
    audit_http.init_app(app)  # /log, /api/v1/audit/events, audit keys, security report
    withdrawal_views.init_app(app)  # /account/applications: remove an application's access
    privacy_views.init_app(app)  # /account/export, /account/delete
    metrics.init_app(
        app,
        settings,
        [AuditCounters(services.database)],
        check_token=static_bearer_refusal,
    )  # /metrics
    rate_limits.init_app(app, settings)  # last: it applies the limits every view declared
    return app
