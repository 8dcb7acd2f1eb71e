"""The signed-in user of the current request, and the guard for pages that need one."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import urlencode

from flask import current_app, g, redirect, request
from werkzeug.wrappers import Response as WerkzeugResponse

from echo_identity.accounts.credentials import SESSION_EPOCH_KEY, credentials_epoch
from echo_identity.accounts.models import User
from echo_identity.accounts.passwords import Passwords
from echo_identity.accounts.service import AccountService
from echo_identity.accounts.session_cookie import current_session
from echo_identity.db import request_session

P = ParamSpec("P")
R = TypeVar("R")


def account_service() -> AccountService:
    passwords: Passwords = current_app.extensions["echo.passwords"]
    return AccountService(request_session(), passwords)


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


def login_required(view: Callable[P, R]) -> Callable[P, R | WerkzeugResponse]:
    """Send anonymous visitors to ``/login`` and back to this page afterwards."""

    @wraps(view)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | WerkzeugResponse:
        if current_user() is None:
            target = request.full_path if request.query_string else request.path
            return redirect("/login?" + urlencode({"next": target}))
        return view(*args, **kwargs)

    return guarded
