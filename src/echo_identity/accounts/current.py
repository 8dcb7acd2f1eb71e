"""The signed-in user of the current request, and the guard for pages that need one."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import urlencode

from flask import g, redirect, request
from werkzeug.wrappers import Response as WerkzeugResponse

from echo_identity.accounts.credentials import SESSION_EPOCH_KEY, credentials_epoch
from echo_identity.accounts.models import User
from echo_identity.accounts.service import Accounts, AccountService
from echo_identity.accounts.session_cookie import current_session
from echo_identity.accounts.sessions import SessionStore
from echo_identity.web.context import request_session, service

P = ParamSpec("P")
R = TypeVar("R")


def account_service() -> AccountService:
    """The account service working in this request's database session."""
    return service(Accounts).service(request_session())


def session_store() -> SessionStore:
    """The app's browser-session store (the database's or Redis)."""
    return service(SessionStore)  # type: ignore[type-abstract]  # a Protocol, checked at runtime


def current_user() -> User | None:
    """The active user bound to this request's session, or ``None``.

    A session whose user was disabled or deleted, or that was signed in before the user's
    credentials were last revoked (its credentials epoch is stale), is ended on the spot.
    """
    if "current_user" in g:
        cached: User | None = g.current_user
        return cached
    session = current_session()
    user = account_service().get(session.user_id) if session.user_id is not None else None
    if session.user_id is not None and (
        user is None or user.disabled or session.get(SESSION_EPOCH_KEY) != credentials_epoch(user)
    ):
        session.end()
        user = None
    g.current_user = user
    return user


def signed_in_user() -> User:
    """The signed-in user of a view guarded by :func:`login_required`.

    Raises ``RuntimeError`` when there is none: the view lacks its ``login_required`` guard.
    """
    user = current_user()
    if user is None:
        raise RuntimeError("signed_in_user() is for views guarded by login_required")
    return user


def login_required(view: Callable[P, R]) -> Callable[P, R | WerkzeugResponse]:
    """Send anonymous visitors to ``/login`` and back to this page afterwards."""

    @wraps(view)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | WerkzeugResponse:
        if current_user() is None:
            target = request.full_path if request.query_string else request.path
            return redirect("/login?" + urlencode({"next": target}))
        return view(*args, **kwargs)

    return guarded
