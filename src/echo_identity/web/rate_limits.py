"""Rate limits (Flask-Limiter): per client IP, shared through Redis when ``ECHO_REDIS_URL`` is set.

The client IP is ``request.remote_addr`` after ``ProxyFix``, so only the configured trusted
proxy hops can change it. Views and blueprints declare their limits when they are defined::

    @bp.post("/login")
    @rate_limits.limit(login_limit, methods=["POST"])

and :func:`init_app`, called once every blueprint is registered, gives each app a limiter of
its own (its storage, its key prefix) and applies the declarations to it: two apps in one
process never share counters or a storage.

Flask-Limiter's own request hooks (resolving the limits of the endpoint, adding the
``X-RateLimit-*`` headers, resetting its request state) run only for the endpoints that
declared a limit, themselves or through their blueprint: no default, application or meta limits
are configured, so on any other endpoint (``/token``, ``/jwks``, pages) those hooks would find
nothing to do, at a cost on every request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, current_app, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many

from echo_identity.config import Settings
from echo_identity.web.context import service

F = TypeVar("F", bound=Callable[..., Any])
_LIMITS = "echo_rate_limits"
_EXEMPT = "echo_rate_limit_exempt"
# Flask-Limiter's settings for limits on every endpoint (default, application, meta): none is
# set, but if one were, its hooks would have to run on every request.
_EVERYWHERE = ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META")


@dataclass(frozen=True)
class Declared:
    """A limit a view or blueprint asked for: its value (read per request), the methods it
    applies to (all when ``None``) and what to do on breach."""

    value: Callable[[], str]
    methods: list[str] | None = None
    on_breach: Callable[[RequestLimit], Any] | None = None


def limit(
    value: Callable[[], str],
    *,
    methods: list[str] | None = None,
    on_breach: Callable[[RequestLimit], Any] | None = None,
) -> Callable[[F], F]:
    """Declare a per-IP limit on a view (applied by :func:`init_app`)."""

    def declare(view: F) -> F:
        setattr(view, _LIMITS, [*getattr(view, _LIMITS, []), Declared(value, methods, on_breach)])
        return view

    return declare


def exempt(view: F) -> F:
    """Declare a view exempt from the default limits (it limits itself)."""
    setattr(view, _EXEMPT, True)
    return view


def limit_blueprint(blueprint: Blueprint, value: Callable[[], str]) -> None:
    """Declare a per-IP limit on every route of ``blueprint``."""
    setattr(blueprint, _LIMITS, [*getattr(blueprint, _LIMITS, []), Declared(value)])


def login_limit() -> str:
    return service(Settings).login_rate_limit


def api_limit() -> str:
    return service(Settings).api_rate_limit


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Give ``app`` its own limiter and apply every declaration of its views and blueprints;
    call it after the last blueprint is registered."""
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url or "memory://"
    app.config["RATELIMIT_KEY_PREFIX"] = settings.redis_namespace
    limiter = Limiter(key_func=get_remote_address, headers_enabled=True)
    hooks = _Hooks.of(app)
    limiter.init_app(app)
    limited: set[str] = set()
    for endpoint, registered in list(app.view_functions.items()):
        view: Any = registered
        if getattr(view, _EXEMPT, False):
            limiter.exempt(view)
        for declared in getattr(view, _LIMITS, []):
            view = limiter.limit(
                declared.value, methods=declared.methods, on_breach=declared.on_breach
            )(view)
            limited.add(endpoint)
        app.view_functions[endpoint] = view
    for name, blueprint in app.blueprints.items():
        for declared in getattr(blueprint, _LIMITS, []):
            limiter.limit(declared.value)(cast(Blueprint, blueprint))
            limited.update(e for e in app.view_functions if _in_blueprint(e, name))
    if not any(app.config.get(key) for key in _EVERYWHERE):
        hooks.only_for(app, frozenset(limited))
    return limiter


def _in_blueprint(endpoint: str, blueprint: str) -> bool:
    """Whether ``endpoint`` belongs to ``blueprint`` or to one nested in it (``a.b.view``)."""
    return endpoint.startswith(blueprint + ".")


_Hook = Callable[..., Any]


@dataclass(frozen=True)
class _Hooks:
    """The request hooks of an app, to tell the ones Flask-Limiter's ``init_app`` adds."""

    before: tuple[_Hook, ...]
    after: tuple[_Hook, ...]
    teardown: tuple[_Hook, ...]

    @classmethod
    def of(cls, app: Flask) -> _Hooks:
        return cls(
            tuple(app.before_request_funcs.get(None, ())),
            tuple(app.after_request_funcs.get(None, ())),
            tuple(app.teardown_request_funcs.get(None, ())),
        )

    def only_for(self, app: Flask, endpoints: frozenset[str]) -> None:
        """Make every app-wide hook added since :meth:`of` run only on ``endpoints``."""
        for funcs, known, passes_on in (
            (app.before_request_funcs, self.before, False),
            (app.after_request_funcs, self.after, True),
            (app.teardown_request_funcs, self.teardown, False),
        ):
            hooks: list[Any] = funcs.get(None, [])
            hooks[:] = [
                hook
                if any(hook is seen for seen in known)
                else _only_for(hook, endpoints, passes_on=passes_on)
                for hook in hooks
            ]


def _only_for(hook: _Hook, endpoints: frozenset[str], *, passes_on: bool) -> _Hook:
    """``hook`` run only when the request's endpoint is one of ``endpoints``; elsewhere it
    returns ``None``, or its argument unchanged when it ``passes_on`` (an after-request hook
    hands the response on)."""

    def gated(*args: Any) -> Any:
        if request.endpoint in endpoints:
            return hook(*args)
        return args[0] if passes_on else None

    return gated


def _current_limiter() -> Limiter:
    limiter: Limiter = next(iter(current_app.extensions["limiter"]))
    return limiter


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
        strategy = _current_limiter().limiter
        key = self._key(ip)
        for item in self._items:
            if not strategy.test(item, *key):
                reset = strategy.get_window_stats(item, *key).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def spend(self, ip: str) -> None:
        """Count one failure from ``ip`` against every window of the limit."""
        strategy = _current_limiter().limiter
        key = self._key(ip)
        for item in self._items:
            strategy.hit(item, *key)
