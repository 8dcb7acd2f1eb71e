"""What request code reaches through the web layer: the request facts that audit events carry,
the request's database session, and the application's services.

The services object is built once by :func:`echo_identity.services.build_services` and attached
to the app by :func:`attach_services`; request code asks for one collaborator by its type with
:func:`service` (``service(Provider)``, ``service(Passwords)``), so a domain never imports the
wiring point above it and never names an ``app.extensions`` key.

Each request gets one ORM session on the services' :class:`~echo_identity.db.Database`
(:func:`request_session`), created on first use and closed after the response; services flush
into it and the request commits once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, Response, current_app, g, request
from sqlalchemy.orm import Session

from echo_identity.db import READ_ONLY, Database
from echo_identity.web.request_id import current_request_id

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")


@dataclass(frozen=True)
class RequestContext:
    """Who is on the other end of the request: captured by the web layer, passed down."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


NO_REQUEST = RequestContext()


def request_context() -> RequestContext:
    """IP (after the trusted proxy hops), user agent and request id of the current request."""
    return RequestContext(
        ip=request.remote_addr,
        user_agent=request.user_agent.string or None,
        request_id=current_request_id() or None,
    )


def attach_services(app: Flask, services: DataclassInstance) -> None:
    """Make ``services`` the one source of collaborators for ``app``'s request code, and give
    each request its own session on the services' :class:`Database` (see the module
    docstring)."""
    by_type: dict[type, object] = {}
    for field in fields(services):
        value = getattr(services, field.name)
        if value is not None:
            by_type.setdefault(type(value), value)
    app.extensions["echo.services"] = _Lookup(services, by_type)
    # Release the request's transaction before the session cookie is saved through another
    # connection (Flask saves the session after the after_request handlers): on SQLite the
    # request's open transaction would otherwise hold the write lock the save needs.
    app.after_request(_release_request_session)
    app.teardown_appcontext(_close_request_session)


def service(kind: type[T]) -> T:
    """The collaborator of type ``kind`` (or a subclass of it) of the current app.

    Raises ``LookupError`` when the services object holds none: a wiring mistake.
    """
    lookup: _Lookup = current_app.extensions["echo.services"]
    return lookup.get(kind)


def services_of(app: Flask) -> Any:
    """The services object attached to ``app`` (typed by the caller, which sits above)."""
    lookup: _Lookup = app.extensions["echo.services"]
    return lookup.services


def request_session() -> Session:
    """The ORM session of the current request, created on first use."""
    if "db_session" not in g:
        g.db_session = service(Database).session()
    session: Session = g.db_session
    return session


def reading_request_session() -> Session:
    """The request's session, its transaction begun as a read: on SQLite ``BEGIN DEFERRED``,
    so reading never takes the database's single write lock (on PostgreSQL every transaction
    begins that way). End it (:func:`commit_request_session`) before writing: a write from a
    deferred transaction can fail with ``SQLITE_BUSY`` once another connection has committed.
    """
    session = request_session()
    if not session.in_transaction():
        session.connection(execution_options=READ_ONLY)
    return session


def commit_request_session() -> None:
    """Commit the request's session if the request opened one (no session is made for it)."""
    session: Session | None = g.get("db_session")
    if session is not None:
        session.commit()


def release_request_session() -> None:
    """End the request's transaction now (rolling back anything uncommitted).

    On SQLite the request's transaction holds the single write lock, so a view must call this
    before it writes through *another* session (the browser-session store, for one).
    """
    _close_request_session(None)


def _release_request_session(response: Response) -> Response:
    release_request_session()
    return response


def _close_request_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()


class _Lookup:
    def __init__(self, services: object, by_type: dict[type, object]) -> None:
        self.services = services
        self._by_type = by_type
        self._cache: dict[type, object] = {}

    def get(self, kind: type[T]) -> T:
        found = self._cache.get(kind)
        if found is None:
            matches = [value for value in self._by_type.values() if isinstance(value, kind)]
            if len(matches) != 1:
                raise LookupError(f"{len(matches)} services of type {kind.__name__}")
            found = self._cache[kind] = matches[0]
        return found  # type: ignore[return-value]
