"""CSRF protection for browser forms (Flask-WTF). Protocol endpoints that authenticate the
client by other means (token, revocation, introspection, /verify) are exempted where defined."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request
from flask_wtf.csrf import CSRFProtect

F = TypeVar("F", bound=Callable[..., Any])
_EXEMPT_ENDPOINTS = "echo.csrf_exempt_endpoints"


class EndpointCSRFProtect(CSRFProtect):  # type: ignore[misc]  # Flask-WTF has no types
    """Flask-WTF's protection, checking the method first (a ``GET`` has nothing to check) and
    working out whether an endpoint is exempt once per app, not on every request.

    Views are exempted where they are defined, before any request, so an endpoint's answer
    does not change while the app runs.
    """

    def protect(self, apply_exemptions: bool = False) -> None:
        if request.method not in current_app.config["WTF_CSRF_METHODS"]:
            return
        if apply_exemptions and self._exempt_endpoint():
            return
        super().protect()

    def _exempt_endpoint(self) -> bool:
        endpoint = request.endpoint
        if not endpoint:
            return True  # no view will run (404, 405): Flask-WTF does not check either
        known: dict[str, bool] = current_app.extensions.setdefault(_EXEMPT_ENDPOINTS, {})
        exempt = known.get(endpoint)
        if exempt is None:
            exempt = known[endpoint] = bool(self._is_exempt())
        return exempt


csrf = EndpointCSRFProtect()


def csrf_exempt(view: F) -> F:
    """Exempt ``view`` from CSRF checks: for endpoints that authenticate callers otherwise."""
    csrf.exempt(view)
    return view
