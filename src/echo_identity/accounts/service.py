"""Account logic: creating users, authenticating them, changing passwords."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.accounts.errors import (
    EmailTakenError,
    InvalidCredentialsError,
    InvalidEmailError,
    InvalidUsernameError,
    UnknownUserError,
    UsernameTakenError,
    WeakPasswordError,
)
from echo_identity.accounts.models import User
from echo_identity.accounts.passwords import Passwords, acceptable_password

_USERNAME = re.compile(r"[a-z0-9._@+-]{1,64}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def normalize_username(username: str) -> str:
    """Usernames compare case-insensitively and after Unicode normalisation."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


class AccountService:
    """Users in one database session; commits its own changes."""

    def __init__(self, session: Session, passwords: Passwords) -> None:
        self._session = session
        self._passwords = passwords

    def create_user(self, username: str, email: str, password: str, *, admin: bool = False) -> User:
        """Create and commit a user; raises an :class:`AccountError` for invalid input."""
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
        self._session.commit()
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
        does not reveal which usernames exist. A hash made with older parameters is upgraded.
        """
        user = self.find(username) if len(username) <= 256 else None
        if user is None or len(password) > 1024:
            self._passwords.verify_unknown_user(password[:1024])
            raise InvalidCredentialsError()
        if not self._passwords.verify(user.password_hash, password) or user.disabled:
            raise InvalidCredentialsError()
        if self._passwords.needs_rehash(user.password_hash):
            user.password_hash = self._passwords.hash(password)
            self._session.commit()
        return user

    def set_password(self, username: str, password: str) -> User:
        """Replace a user's password.

        Raises :class:`UnknownUserError` or :class:`WeakPasswordError`.
        """
        if not acceptable_password(password):
            raise WeakPasswordError()
        user = self.require(username)
        user.password_hash = self._passwords.hash(password)
        self._session.commit()
        return user

    def set_disabled(self, username: str, disabled: bool) -> User:
        """Disable or re-enable a user; raises :class:`UnknownUserError`."""
        user = self.require(username)
        user.disabled = disabled
        self._session.commit()
        return user
