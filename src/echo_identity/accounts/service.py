"""Account logic: creating users, authenticating them, changing passwords, disabling them.

Changing or resetting a password and disabling a user end every credential the user held
(:func:`~echo_identity.accounts.credentials.revoke_user_credentials`, with the grant revokers
the layers above plug in at wiring). :class:`Accounts` is what the wiring point builds once;
it makes an :class:`AccountService` for each unit of work's database session.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.accounts.credentials import (
    CredentialsRevoked,
    GrantRevoker,
    revoke_user_credentials,
)
from echo_identity.accounts.errors import (
    EmailTakenError,
    InvalidCredentialsError,
    InvalidEmailError,
    InvalidUsernameError,
    PasswordMismatchError,
    UnknownUserError,
    UsernameTakenError,
    WeakPasswordError,
    WrongCurrentPasswordError,
)
from echo_identity.accounts.models import User
from echo_identity.accounts.passwords import MAX_LENGTH, Passwords, acceptable_password
from echo_identity.accounts.sessions import SessionStore
from echo_identity.audit.events import EventType
from echo_identity.audit.service import AuditTrail
from echo_identity.web.context import NO_REQUEST, RequestContext

_USERNAME = re.compile(r"[a-z0-9._@+-]{1,64}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def normalize_username(username: str) -> str:
    """Usernames compare case-insensitively and after Unicode normalisation."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


@dataclass(frozen=True)
class Accounts:
    """The account service's collaborators, built once at wiring (``services.py``)."""

    passwords: Passwords
    audit: AuditTrail
    revokers: tuple[GrantRevoker, ...]

    def service(self, session: Session) -> AccountService:
        """The account service working in ``session``."""
        return AccountService(session, self.passwords, audit=self.audit, revokers=self.revokers)


class AccountService:
    """Users in one database session. It flushes; the caller commits its unit of work, except
    where credentials are revoked (:mod:`~echo_identity.accounts.credentials` commits before it
    deletes the browser sessions through the store's own connection).

    ``revokers`` end what the layers above hold for a user whose credentials die (the identity
    provider's codes and token families); they are handed in by the wiring point.
    """

    def __init__(
        self,
        session: Session,
        passwords: Passwords,
        *,
        audit: AuditTrail,
        revokers: Sequence[GrantRevoker],
    ) -> None:
        self._session = session
        self._passwords = passwords
        self._audit = audit
        self._revokers = tuple(revokers)

    def create_user(self, username: str, email: str, password: str, *, admin: bool = False) -> User:
        """Create (and flush) a user; raises an :class:`AccountError` for invalid input."""
        username = normalize_username(username)
        email = email.strip().lower()
        if not _USERNAME.fullmatch(username):
            raise InvalidUsernameError()
        if len(email) > 254 or not _EMAIL.fullmatch(email):
            raise InvalidEmailError()
        if not acceptable_password(password):
            raise WeakPasswordError()
        if self.find(username) is not None:
            raise UsernameTakenError()
        if self._session.scalar(select(User.id).where(User.email == email)) is not None:
            raise EmailTakenError()
        user = User(
            sub=str(uuid.uuid4()),
            username=username,
            email=email,
            password_hash=self._passwords.hash(password),
            is_admin=admin,
        )
        self._session.add(user)
        self._session.flush()
        return user

    def find(self, username: str) -> User | None:
        """The user called ``username``, or ``None``."""
        return self._session.scalar(
            select(User).where(User.username == normalize_username(username))
        )

    def get(self, user_id: int) -> User | None:
        """The user with primary key ``user_id``, or ``None``."""
        return self._session.get(User, user_id)

    def require(self, username: str) -> User:
        """Like :meth:`find`; raises :class:`UnknownUserError` instead of returning ``None``."""
        user = self.find(username)
        if user is None:
            raise UnknownUserError()
        return user

    def list_users(self) -> Sequence[User]:
        return self._session.scalars(select(User).order_by(User.username)).all()

    def authenticate(self, username: str, password: str) -> User:
        """The active user whose password matches; raises :class:`InvalidCredentialsError`.

        An unknown username costs one argon2 verification, like a wrong password, so timing
        does not reveal which usernames exist. A hash made with older parameters is upgraded
        (flushed; the caller commits it with the sign-in's audit event).
        """
        user = self.find(username) if len(username) <= 256 else None
        if user is None or len(password) > 1024:
            self._passwords.verify_unknown_user(password[:1024])
            raise InvalidCredentialsError()
        if not self._passwords.verify(user.password_hash, password) or user.disabled:
            raise InvalidCredentialsError()
        if self._passwords.needs_rehash(user.password_hash):
            user.password_hash = self._passwords.hash(password)
            self._session.flush()
        return user

    def set_password(
        self, username: str, password: str, *, sessions: SessionStore
    ) -> CredentialsRevoked:
        """An administrator's reset (CLI): replace the password and end every session,
        authorization code and token family of the user.

        Raises :class:`UnknownUserError` or :class:`WeakPasswordError` (nothing changed).
        """
        if not acceptable_password(password):
            raise WeakPasswordError()
        user = self.require(username)
        user.password_hash = self._passwords.hash(password)
        return self._revoke(
            user, sessions, EventType.PASSWORD_CHANGED, actor="cli", details={"by": "administrator"}
        )

    def change_password(
        self,
        user: User,
        current: str,
        new: str,
        confirmation: str,
        *,
        sessions: SessionStore,
        context: RequestContext = NO_REQUEST,
    ) -> CredentialsRevoked:
        """The signed-in user's own change: check ``current`` like a sign-in (one argon2
        verification whatever its length), then replace the password and end every session,
        code and token family of the user. The caller re-binds the current browser session.

        Raises :class:`WrongCurrentPasswordError`, :class:`PasswordMismatchError` or
        :class:`WeakPasswordError`; nothing is changed then.
        """
        if len(current) > MAX_LENGTH:
            self._passwords.verify_unknown_user(current[:MAX_LENGTH])
            raise WrongCurrentPasswordError()
        if not self._passwords.verify(user.password_hash, current):
            raise WrongCurrentPasswordError()
        if new != confirmation:
            raise PasswordMismatchError()
        if not acceptable_password(new):
            raise WeakPasswordError()
        user.password_hash = self._passwords.hash(new)
        return self._revoke(
            user, sessions, EventType.PASSWORD_CHANGED, context=context, details={"by": "user"}
        )

    def disable(self, username: str, *, sessions: SessionStore) -> CredentialsRevoked:
        """Disable a user (CLI) and end every session, code and token family they hold.

        Disabling an already disabled user revokes again (harmless). Raises
        :class:`UnknownUserError`.
        """
        user = self.require(username)
        user.disabled = True
        return self._revoke(user, sessions, EventType.USER_DISABLED, actor="cli")

    def _revoke(
        self,
        user: User,
        sessions: SessionStore,
        cause: EventType,
        *,
        context: RequestContext = NO_REQUEST,
        actor: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> CredentialsRevoked:
        """:func:`revoke_user_credentials` with this service's audit trail and revokers."""
        return revoke_user_credentials(
            self._session,
            sessions,
            user,
            audit=self._audit,
            revokers=self._revokers,
            cause=cause,
            context=context,
            actor=actor,
            details=details,
        )

    def enable(self, username: str) -> User:
        """Re-enable a user (CLI; flushed, the caller commits). Nothing revoked while disabled
        comes back: the user signs in again. Raises :class:`UnknownUserError`."""
        user = self.require(username)
        if user.disabled:
            user.disabled = False
            self._audit.record(self._session, EventType.USER_ENABLED, actor="cli", user=user.sub)
        self._session.flush()
        return user
