"""The one place tests make users, clients and other records."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass

from echo_identity.accounts.passwords import Passwords
from echo_identity.accounts.service import AccountService
from echo_identity.db import Database
from tests.support.environment import FAST_ARGON2

_counter = itertools.count(1)


def fast_passwords() -> Passwords:
    return Passwords(
        int(FAST_ARGON2["ECHO_ARGON2_TIME_COST"]),
        int(FAST_ARGON2["ECHO_ARGON2_MEMORY_COST"]),
        int(FAST_ARGON2["ECHO_ARGON2_PARALLELISM"]),
    )


@dataclass(frozen=True)
class TestUser:
    __test__ = False  # not a pytest test class

    username: str
    password: str
    sub: str
    id: int


def create_user(
    database: Database | str,
    *,
    username: str | None = None,
    password: str | None = None,
    admin: bool = False,
    passwords: Passwords | None = None,
) -> TestUser:
    """Create a user directly through :class:`AccountService` with a unique name and password."""
    db = Database(database) if isinstance(database, str) else database
    username = username or f"user{next(_counter)}-{secrets.token_hex(3)}"
    password = password or "pw-" + secrets.token_urlsafe(16)
    with db.session() as session:
        user = AccountService(session, passwords or fast_passwords()).create_user(
            username, f"{username}@example.org", password, admin=admin
        )
        created = TestUser(user.username, password, user.sub, user.id)
    if isinstance(database, str):
        db.dispose()
    return created
