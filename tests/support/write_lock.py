"""Probe whether a user's row can be written *right now* from a connection of its own, without
waiting for any lock: SQLite's single write lock (``BEGIN IMMEDIATE`` with a busy timeout of
0) or, on PostgreSQL, the row's lock (``FOR UPDATE NOWAIT``). Used from inside a password hash
check to prove a sign-in holds nothing while argon2 runs."""

from __future__ import annotations

import sqlite3

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from echo_identity.config import database_url_for_sqlalchemy

_SQLITE_PREFIX = "sqlite:///"


def write_user_row_now(database_url: str, user_id: int) -> str | None:
    """Touch the ``users`` row ``user_id`` (no value changes) in a transaction of its own,
    refusing to wait for a lock. ``None`` when it committed; else the database's error."""
    if database_url.startswith(_SQLITE_PREFIX):
        return _write_sqlite_now(database_url.removeprefix(_SQLITE_PREFIX), user_id)
    engine = create_engine(database_url_for_sqlalchemy(database_url))
    try:
        with engine.begin() as connection:
            connection.execute(
                text("SELECT id FROM users WHERE id = :id FOR UPDATE NOWAIT"), {"id": user_id}
            )
            connection.execute(
                text("UPDATE users SET email = email WHERE id = :id"), {"id": user_id}
            )
    except OperationalError as error:  # the lock was not available (NOWAIT)
        return str(error)
    finally:
        engine.dispose()
    return None


def _write_sqlite_now(path: str, user_id: int) -> str | None:
    connection = sqlite3.connect(path, timeout=0, isolation_level=None)  # busy timeout 0
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE users SET email = email WHERE id = ?", (user_id,))
        connection.execute("COMMIT")
    except sqlite3.OperationalError as error:
        return str(error)
    finally:
        connection.close()
    return None
