"""Test databases: a fresh SQLite file, or a fresh schema in ECHO_TEST_DATABASE_URL's PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text

from echo_identity.config import database_url_for_sqlalchemy

POSTGRES_URL = os.environ.get("ECHO_TEST_DATABASE_URL", "")


def engine_name() -> str:
    return "postgresql" if POSTGRES_URL else "sqlite"


@contextmanager
def fresh_database_url(tmp_dir: Path) -> Iterator[str]:
    """A URL naming an empty database, dropped afterwards (PostgreSQL: a throwaway schema)."""
    if not POSTGRES_URL:
        yield f"sqlite:///{tmp_dir / 'echo-test.db'}"
        return
    base = database_url_for_sqlalchemy(POSTGRES_URL)
    schema = "echo_test_" + secrets.token_hex(6)
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
