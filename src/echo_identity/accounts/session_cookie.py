"""Flask glue for server-side sessions: ``flask.session`` backed by a :class:`SessionStore`.

The cookie holds only a random id. ``start_login`` rotates the id (no session fixation);
``end`` deletes the server-side record so an old cookie no longer authenticates. Cookie flags:
HttpOnly and SameSite=Lax always; Secure and the ``__Host-`` prefix in production.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from flask import Flask, Request, Response, request, session
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from echo_identity.accounts.sessions import SessionRecord, SessionStore
from echo_identity.crypto.digests import lookup_digest, random_token
from echo_identity.db import utcnow

PRODUCTION_COOKIE = "__Host-echo_session"
DEVELOPMENT_COOKIE = "echo_session"
# Refresh last-seen at most this often, so reading a page is not always a write.
TOUCH_INTERVAL = timedelta(seconds=60)
# Expired sessions are swept by the process that creates a session, at most this often.
PURGE_INTERVAL = timedelta(minutes=10)
_MAX_TOKEN_LENGTH = 128


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """Session data plus the authenticated user id, persisted by :class:`ServerSessionInterface`."""

    def __init__(self, record: SessionRecord | None = None, token: str | None = None) -> None:
        def on_update(_self: CallbackDict[str, Any]) -> None:
            self.modified = True

        super().__init__(dict(record.data) if record else {}, on_update)
        self.record = record
        self.token = token
        self.user_id: int | None = record.user_id if record else None
        self.modified = False
        self.rotate = False
        self.ended = False

    def start_login(self, user_id: int) -> None:
        """Bind the session to ``user_id`` under a fresh id; earlier data is dropped."""
        self.clear()
        self.user_id = user_id
        self["auth_time"] = int(time.time())  # OIDC auth_time of ID tokens minted from here
        self.rotate = True
        self.modified = True

    def end(self) -> None:
        """Delete the session server-side and expire the cookie."""
        self.clear()
        self.user_id = None
        self.ended = True


def current_session() -> ServerSession:
    server_session: ServerSession = session  # type: ignore[assignment]
    return server_session


class ServerSessionInterface(SessionInterface):
    def __init__(self, store: SessionStore, *, secure: bool) -> None:
        self.store = store
        self.secure = secure
        self.cookie_name = PRODUCTION_COOKIE if secure else DEVELOPMENT_COOKIE
        self._last_purge = utcnow()

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        token = request.cookies.get(self.cookie_name)
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            return ServerSession()
        record = self.store.get(lookup_digest(token))
        if record is None:
            return ServerSession()
        if self.store.policy.expired(record, utcnow()):
            self.store.delete(record.sid)
            return ServerSession()
        return ServerSession(record, token)

    def save_session(  # type: ignore[override]
        self, app: Flask, session: ServerSession, response: Response
    ) -> None:
        response.vary.add("Cookie")
        old = session.record
        if session.ended or session.rotate:
            if old is not None:
                self.store.delete(old.sid)
            if session.ended:
                if session.token:
                    self._delete_cookie(response)
                return
        if session.user_id is None and not session:
            if old is not None and not session.rotate:
                self.store.delete(old.sid)
                self._delete_cookie(response)
            return

        now = utcnow()
        ip = request.remote_addr
        user_agent = (request.user_agent.string or "")[:512] or None
        if old is None or session.rotate:
            token = random_token(32)
            record = SessionRecord(
                sid=lookup_digest(token),
                user_id=session.user_id,
                created_at=now,
                last_seen_at=now,
                data=dict(session),
                ip=ip,
                user_agent=user_agent,
            )
            self.store.put(record)
            self._set_cookie(response, token)
            if now - self._last_purge >= PURGE_INTERVAL:
                self._last_purge = now
                self.store.purge_expired()
            return
        if session.modified or now - old.last_seen_at >= TOUCH_INTERVAL:
            old.data = dict(session)
            old.user_id = session.user_id
            old.last_seen_at = now
            old.ip = ip
            old.user_agent = user_agent
            self.store.put(old)

    def _set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            self.cookie_name,
            token,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="Lax",
        )

    def _delete_cookie(self, response: Response) -> None:
        response.delete_cookie(
            self.cookie_name, path="/", secure=self.secure, httponly=True, samesite="Lax"
        )
