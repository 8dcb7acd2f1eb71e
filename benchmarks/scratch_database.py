"""A migrated, empty database for a benchmark run, removed afterwards.

Shared by the benchmarks that need one (this directory is on ``sys.path`` when a script in it
runs): a temporary SQLite file, or a throwaway schema in a PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, insert, text
from sqlalchemy.orm import Session

from echo_identity import migrations
from echo_identity.accounts.models import User
from echo_identity.config import database_url_for_sqlalchemy
from echo_identity.db import Database


@contextlib.contextmanager
def database_at(url: str | None, name: str, application_name: str = "") -> Iterator[Database]:
    """A migrated, empty database: ``<tmp>/<name>.db`` when ``url`` is ``None``, else a
    throwaway schema in ``url`` (its connections tagged with ``application_name`` if given)."""
    if url is None:
        with tempfile.TemporaryDirectory(prefix=f"echo-{name}-") as directory:
            database = Database(f"sqlite:///{Path(directory) / f'{name}.db'}")
            migrations.upgrade(database)
            try:
                yield database
            finally:
                database.dispose()
        return
    base = database_url_for_sqlalchemy(url)
    schema = "echo_bench_" + secrets.token_hex(6)
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    options = f"{base}{separator}options={quote(f'-csearch_path={schema}')}"
    if application_name:
        options += f"&application_name={application_name}"
    database = Database(options)
    try:
        migrations.upgrade(database)
        yield database
    finally:
        database.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def add_users(session: Session, count: int, now: datetime) -> None:
    """Users 1..``count`` with predictable subs and names and no usable password."""
    session.execute(
        insert(User),
        [
            {
                "id": n,
                "sub": f"00000000-0000-4000-8000-{n:012d}",
                "username": f"user{n}",
                "email": f"user{n}@example.org",
                "password_hash": "!",
                "created_at": now,
                "updated_at": now,
            }
            for n in range(1, count + 1)
        ],
    )
