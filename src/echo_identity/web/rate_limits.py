"""Rate limits (Flask-Limiter): per client IP, shared through Redis when ``ECHO_REDIS_URL`` is set.

The client IP is ``request.remote_addr`` after ``ProxyFix``, so only the configured trusted
proxy hops can change it. Limits are declared on the views that need them, e.g.::

    @limiter.limit(login_limit, methods=["POST"])
"""

from __future__ import annotations

import math
import time

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many

from echo_identity.config import Settings
from echo_identity.web.context import service

limiter = Limiter(key_func=get_remote_address, headers_enabled=True)


def login_limit() -> str:
    return service(Settings).login_rate_limit


def api_limit() -> str:
    return service(Settings).api_rate_limit


def init_app(app: Flask, settings: Settings) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url or "memory://"
    app.config["RATELIMIT_KEY_PREFIX"] = settings.redis_namespace
    limiter.init_app(app)


class FailureLimit:
    """A per-IP limit that only failed requests spend, for endpoints that busy, well-behaved
    callers hit constantly (the token endpoint).

    Flask-Limiter's ``deduct_when`` does the same, but resolves and evaluates its limits on
    every request; this checks the limit's own storage (the limiter's: memory or Redis) with
    the ``limits`` strategy directly: one ``test`` per request, one ``hit`` per failure.
    """

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._items: list[RateLimitItem] = parse_many(value)

    def _key(self, ip: str) -> tuple[str, str, str]:
        return (service(Settings).redis_namespace, self._name, ip)

    def retry_after(self, ip: str) -> int | None:
        """Seconds until ``ip`` may try again, or ``None`` while it is within the limit."""
        strategy = limiter.limiter
        key = self._key(ip)
        for item in self._items:
            if not strategy.test(item, *key):
                reset = strategy.get_window_stats(item, *key).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def spend(self, ip: str) -> None:
        """Count one failure from ``ip`` against every window of the limit."""
        strategy = limiter.limiter
        key = self._key(ip)
        for item in self._items:
            strategy.hit(item, *key)
