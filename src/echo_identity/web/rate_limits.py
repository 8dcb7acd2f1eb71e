"""Rate limits (Flask-Limiter): per client IP, shared through Redis when ``ECHO_REDIS_URL`` is set.

The client IP is ``request.remote_addr`` after ``ProxyFix``, so only the configured trusted
proxy hops can change it. Limits are declared on the views that need them, e.g.::

    @limiter.limit(login_limit, methods=["POST"])
"""

from __future__ import annotations

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from echo_identity.config import Settings

limiter = Limiter(key_func=get_remote_address, headers_enabled=True)


def login_limit() -> str:
    settings: Settings = current_app.extensions["echo.settings"]
    return settings.login_rate_limit


def api_limit() -> str:
    settings: Settings = current_app.extensions["echo.settings"]
    return settings.api_rate_limit


def init_app(app: Flask, settings: Settings) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url or "memory://"
    app.config["RATELIMIT_KEY_PREFIX"] = settings.redis_namespace
    limiter.init_app(app)
