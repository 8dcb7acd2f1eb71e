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
from datetime import datetime
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
from echo_identity.db import READ_ONLY
from echo_identity.web.context import NO_REQUEST, RequestContext

_USERNAME = re.compile(r"[a-z0-9._@+-]{1,64}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


# A transaction that only reads: on SQLite it never takes the write lock (see db.py).


def normalize_username(username: str) -> str:
    """Usernames compare case-insensitively and after Unicode normalisation."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


@dataclass(frozen=True)
class _SignInState:
    """What a password was checked against: a sign-in completes only if it still holds."""

    user_id: int
    password_hash: str
    disabled: bool
    tokens_not_before: datetime | None

    @classmethod
    def of(cls, user: User) -> _SignInState:
        return cls(user.id, user.password_hash, user.disabled, user.tokens_not_before)


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
    deletes the browser sessions through the store's own connection), and :meth:`authenticate`
    ends the read transaction it begins before hashing (it holds nothing while argon2 runs).

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

        Argon2 runs with no transaction open: the user is read in a read transaction
        (``BEGIN DEFERRED`` on SQLite) that ends before the password is checked, so a sign-in
        holds neither the database's write lock nor a connection while it hashes. Then the
        user is re-read under the write lock (on PostgreSQL its row lock: ``FOR SHARE``, or
        ``FOR UPDATE`` when it rehashes) and must be as it was when checked: same hash, not
        disabled, credentials not revoked since. When it changed in between, the check runs
        once more against what is stored now, so a password changed or a user disabled
        meanwhile never signs in (and a concurrent sign-in's rehash does not refuse this one).

        An unknown username costs one argon2 verification, like a wrong password, so timing
        does not reveal which usernames exist. A hash made with older parameters is upgraded:
        the new hash is made before the lock is taken and flushed under it.

        Returns the user with the write transaction open: the caller records the sign-in's
        event and commits (the rehash with it). When it raises :class:`InvalidCredentialsError`
        no transaction is left open (the refusal's event can go through the group commit).
        Raises ``RuntimeError`` when the session has a transaction open on entry: ending it
        could lose the caller's work, and keeping it would hold the lock while hashing.
        """
        if self._session.in_transaction():
            raise RuntimeError("authenticate() needs a session with no transaction open")
        for _attempt in range(2):  # a second only when the user changed while argon2 ran
            checked = self._sign_in_state(username)
            if checked is None or len(password) > MAX_LENGTH:
                self._passwords.verify_unknown_user(password[:MAX_LENGTH])
                raise InvalidCredentialsError()
            new_hash = self._check_password(checked, password)
            user = self._session.scalar(
                select(User)
                .where(User.id == checked.user_id)
                .with_for_update(read=new_hash is None)  # shared unless it rehashes
                .execution_options(populate_existing=True)
            )
            if user is not None and _SignInState.of(user) == checked:
                if new_hash is not None:
                    user.password_hash = new_hash
                    self._session.flush()
                return user
            self._session.rollback()  # changed meanwhile: nothing written, lock released
        raise InvalidCredentialsError()

    def _sign_in_state(self, username: str) -> _SignInState | None:
        """What a sign-in checks of the user called ``username`` (``None``: no such user),
        read in a read transaction that is ended before this returns."""
        if len(username) > 256:
            return None
        self._session.connection(execution_options=READ_ONLY)
        try:
            user = self.find(username)
            return None if user is None else _SignInState.of(user)
        finally:
            self._session.rollback()  # end the read: nothing is held while argon2 runs

    def _check_password(self, state: _SignInState, password: str) -> str | None:
        """Verify ``password`` against ``state`` (one argon2 verification, also for a disabled
        user); the upgraded hash when the stored one was made with older parameters, else
        ``None``. Raises :class:`InvalidCredentialsError` for a wrong password or a disabled
        user.
        """
        if not self._passwords.verify(state.password_hash, password) or state.disabled:
            raise InvalidCredentialsError()
        if self._passwords.needs_rehash(state.password_hash):
            return self._passwords.hash(password)
        return None

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
        self.confirm_password(user, current)
        if new != confirmation:
            raise PasswordMismatchError()
        if not acceptable_password(new):
            raise WeakPasswordError()
        user.password_hash = self._passwords.hash(new)
        return self._revoke(
            user, sessions, EventType.PASSWORD_CHANGED, context=context, details={"by": "user"}
        )

    def confirm_password(self, user: User, current: str) -> None:
        """Re-authentication of the signed-in ``user`` before a sensitive change (password,
        export, deletion): one argon2 verification of ``current``, whatever its length.

        Raises :class:`WrongCurrentPasswordError` when it does not match.
        """
        if len(current) > MAX_LENGTH:
            self._passwords.verify_unknown_user(current[:MAX_LENGTH])
            raise WrongCurrentPasswordError()
        if not self._passwords.verify(user.password_hash, current):
            raise WrongCurrentPasswordError()

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
