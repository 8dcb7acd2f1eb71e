"""Flask glue for browser sessions: ``flask.session`` backed by a :class:`SessionStore` once
someone signs in, and by a signed cookie before that.

- **Signed in**: the cookie (``__Host-echo_session`` in production) holds only a random id; the
  data lives server-side. ``start_login`` is the only way a server-side record is created, and
  it rotates the id (no session fixation); ``end`` deletes the record so an old cookie no
  longer authenticates.
- **Anonymous** (a visitor on the sign-in page, the logout confirmation …): the little data
  such a session holds (the CSRF secret of a form) travels in a second cookie
  (``__Host-echo_anon`` in production), signed with a key derived from ``ECHO_SECRET_KEY``
  (itsdangerous, HMAC-SHA256, its own salt) and valid for the session idle timeout. So an
  unauthenticated visitor costs no row and no Redis key, however often it loads a page
  (docs/audit.md#bounded-writes). That cookie can never authenticate anyone: it carries no
  user id, and the user id is only ever read from a server-side record. A tampered, expired
  or oversized (> :data:`MAX_ANONYMOUS_COOKIE`) one is ignored: the visitor starts afresh.
- **Neither** (an API client calling ``/token``, ``/api/v1/…``): a request that carries none of
  the two cookies and whose code never reads or writes the session costs nothing here: no
  cookie is parsed, nothing is saved, and the response gets no ``Vary: Cookie`` (it does not
  depend on one; Flask's own sessions do the same).

Cookie flags: HttpOnly and SameSite=Lax always; Secure and the ``__Host-`` prefix in production.
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from typing import Any

from flask import Flask, Request, Response, request, session
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.datastructures import CallbackDict

from echo_identity.accounts.sessions import SessionRecord, SessionStore
from echo_identity.crypto.digests import lookup_digest
from echo_identity.crypto.secret_formats import SecretKind, mint
from echo_identity.db import utcnow
from echo_identity.logs import get_logger

PRODUCTION_COOKIE = "__Host-echo_session"
DEVELOPMENT_COOKIE = "echo_session"
ANONYMOUS_PRODUCTION_COOKIE = "__Host-echo_anon"
ANONYMOUS_DEVELOPMENT_COOKIE = "echo_anon"
# Bound on the signed anonymous cookie (a CSRF secret needs ~150 characters): larger ones are
# ignored when read and never written.
MAX_ANONYMOUS_COOKIE = 2048
_ANONYMOUS_SALT = "echo-identity.anonymous-session"
# Refresh last-seen at most this often, so reading a page is not always a write.
TOUCH_INTERVAL = timedelta(seconds=60)
# Expired sessions are swept by the process that creates a session, at most this often.
PURGE_INTERVAL = timedelta(minutes=10)
_MAX_TOKEN_LENGTH = 128
log = get_logger("echo_identity.accounts.session")


class ServerSession(CallbackDict[str, Any], SessionMixin):
    """Session data plus the authenticated user id, persisted by :class:`ServerSessionInterface`.

    ``user_id`` comes only from a server-side ``record``; an anonymous session (``record`` is
    ``None``) gets its ``data`` from the signed cookie and never has a user.
    """

    def __init__(
        self,
        record: SessionRecord | None = None,
        token: str | None = None,
        *,
        data: dict[str, Any] | None = None,
        signed_at: int | None = None,
        anonymous_cookie: bool = False,
        carried_cookie: bool | None = None,
    ) -> None:
        def on_update(_self: CallbackDict[str, Any]) -> None:
            self.modified = True

        super().__init__(dict(record.data) if record else dict(data or {}), on_update)
        self.record = record
        self.token = token
        self.user_id: int | None = record.user_id if record else None
        self.signed_at = signed_at  # when the anonymous cookie read was signed (Unix time)
        self.anonymous_cookie = anonymous_cookie  # the request carried one (valid or not)
        # The request carried one of the two cookies (valid or not).
        self.carried_cookie = (
            (anonymous_cookie or record is not None) if carried_cookie is None else carried_cookie
        )
        self.accessed = False  # read through current_session() or a dict read (Flask-WTF)
        self.modified = False
        self.rotate = False
        self.ended = False

    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        return super().__contains__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().get(key, default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.accessed = True
        return super().setdefault(key, default)

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
    """The request's session, marked as used: the response depends on it (``Vary: Cookie``)."""
    server_session: ServerSession = session  # type: ignore[assignment]
    server_session.accessed = True
    return server_session


class ServerSessionInterface(SessionInterface):
    def __init__(self, store: SessionStore, *, secure: bool) -> None:
        self.store = store
        self.secure = secure
        self.cookie_name = PRODUCTION_COOKIE if secure else DEVELOPMENT_COOKIE
        self.anonymous_cookie_name = (
            ANONYMOUS_PRODUCTION_COOKIE if secure else ANONYMOUS_DEVELOPMENT_COOKIE
        )
        self._last_purge = utcnow()

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        if "HTTP_COOKIE" not in request.environ:  # an API client: nothing to parse or load
            return ServerSession(carried_cookie=False)
        cookies = request.cookies
        anonymous_cookie = self.anonymous_cookie_name in cookies
        token = cookies.get(self.cookie_name)
        carried = anonymous_cookie or token is not None
        if token and len(token) <= _MAX_TOKEN_LENGTH:
            record = self.store.get(lookup_digest(token))
            if record is not None and self.store.policy.expired(record, utcnow()):
                self.store.delete(record.sid)
            elif record is not None:
                return ServerSession(record, token, anonymous_cookie=anonymous_cookie)
        return self._open_anonymous(app, request, anonymous_cookie, carried)

    def _open_anonymous(
        self, app: Flask, request: Request, anonymous_cookie: bool, carried: bool
    ) -> ServerSession:
        """The data of a valid anonymous cookie; an empty session for anything else."""
        raw = request.cookies.get(self.anonymous_cookie_name, "")
        if not raw or len(raw) > MAX_ANONYMOUS_COOKIE:
            return ServerSession(anonymous_cookie=anonymous_cookie, carried_cookie=carried)
        try:
            data, signed_at = self._serializer(app).loads(
                raw, max_age=self._anonymous_max_age, return_timestamp=True
            )
        except BadData:  # tampered, signed with another key, expired or not JSON
            data = None
        if not isinstance(data, dict):
            return ServerSession(anonymous_cookie=anonymous_cookie, carried_cookie=carried)
        return ServerSession(
            data=data,
            signed_at=int(signed_at.timestamp()),
            anonymous_cookie=anonymous_cookie,
            carried_cookie=carried,
        )

    @property
    def _anonymous_max_age(self) -> int:
        return int(self.store.policy.idle.total_seconds())

    def _serializer(self, app: Flask) -> URLSafeTimedSerializer:
        # Its own salt: a value signed for the anonymous session is no CSRF token nor anything
        # else signed with the secret key, and the other way round.
        return URLSafeTimedSerializer(
            app.secret_key or b"",
            salt=_ANONYMOUS_SALT,
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
        )

    def save_session(  # type: ignore[override]
        self, app: Flask, session: ServerSession, response: Response
    ) -> None:
        if not (session.carried_cookie or session.accessed or session.modified):
            return  # no cookie came, none is due, and the response does not depend on one
        response.vary.add("Cookie")
        old = session.record
        if session.ended or session.rotate:
            if old is not None:
                self.store.delete(old.sid)
            if session.ended:
                if session.token:
                    self._delete_cookie(response)
                # Signed out: what the rest of the request stored (a form's CSRF secret) is
                # anonymous data now.
                self._save_anonymous(app, session, response)
                return
        if old is None and not session.rotate:
            self._save_anonymous(app, session, response)
            return
        if session.anonymous_cookie:  # signed in now: the anonymous data is obsolete
            self._delete_cookie(response, self.anonymous_cookie_name)
        if session.user_id is None and not session:
            if old is not None and not session.rotate:
                self.store.delete(old.sid)
                self._delete_cookie(response)
            return

        now = utcnow()
        ip = request.remote_addr
        user_agent = (request.user_agent.string or "")[:512] or None
        if old is None or session.rotate:
            token = mint(SecretKind.SESSION_ID)
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

    def _save_anonymous(self, app: Flask, session: ServerSession, response: Response) -> None:
        """Keep an anonymous session's data in the signed cookie (never in the store)."""
        if not session:
            if session.anonymous_cookie:
                self._delete_cookie(response, self.anonymous_cookie_name)
            return
        fresh = session.signed_at is not None and utcnow().timestamp() - session.signed_at < (
            TOUCH_INTERVAL.total_seconds()
        )
        if fresh and not session.modified:
            return  # re-signed at most once a minute, like a stored session's last-seen time
        value = self._serializer(app).dumps(dict(session))
        if len(value) > MAX_ANONYMOUS_COOKIE:
            # Only our own code writes here; a bug, not an attack. Never the data itself.
            log.warning("anonymous_session_too_large", size=len(value), keys=sorted(session))
            if session.anonymous_cookie:
                self._delete_cookie(response, self.anonymous_cookie_name)
            return
        response.set_cookie(
            self.anonymous_cookie_name,
            value,
            max_age=self._anonymous_max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="Lax",
        )

    def _set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            self.cookie_name,
            token,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="Lax",
        )

    def _delete_cookie(self, response: Response, name: str | None = None) -> None:
        response.delete_cookie(
            name or self.cookie_name, path="/", secure=self.secure, httponly=True, samesite="Lax"
        )
