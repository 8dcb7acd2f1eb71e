"""The vault's part of the Flask application: its blueprints and the /api/v1 rate limit.

Called by ``create_app``; it builds nothing (the wiring point, ``echo_identity.services``,
built the :class:`~echo_identity.vault.runtime.VaultRuntime` the views reach through
``web.context.service``).
"""

from __future__ import annotations

from flask import Flask

from echo_identity.vault import api, views
from echo_identity.web.rate_limits import api_limit, limit_blueprint


def init_app(app: Flask) -> None:
    """Register the connect pages and the /api/v1 vault API (rate-limited per client IP)."""
    app.register_blueprint(views.bp)
    limit_blueprint(api.bp, api_limit)  # every /api/v1 call, per client IP
    app.register_blueprint(api.bp)
