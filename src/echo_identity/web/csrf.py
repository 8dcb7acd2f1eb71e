"""CSRF protection for browser forms (Flask-WTF). Protocol endpoints that authenticate the
client by other means (token, revocation, introspection, /verify) are exempted where defined."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()
F = TypeVar("F", bound=Callable[..., Any])


def csrf_exempt(view: F) -> F:
    """Exempt ``view`` from CSRF checks: for endpoints that authenticate callers otherwise."""
    csrf.exempt(view)
    return view
