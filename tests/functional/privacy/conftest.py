"""Fixtures and steps of the export and erasure tests: a server of their own (erasure tests
seal and verify its whole trail), the account pages driven like a person would, and the
checks that nothing of an erased user is left."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import func, select, text

from echo_identity.audit.models import AuditEvent, AuditPseudonym
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.db import Database
from echo_identity.keys.models import DataKey
from echo_identity.schema import metadata
from tests.support.browser import Browser, csrf_token
from tests.support.environment import settings_for
from tests.support.server import LiveServer, running_server
from tests.support.vault import Upstream, connect_upstream


@pytest.fixture(scope="module")
def privacy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A development server of its own: erasure tests seal and verify its whole trail."""
    with running_server(tmp_path_factory.mktemp("privacy")) as live:
        yield live


@pytest.fixture
def privacy_db(privacy_server: LiveServer) -> Iterator[Database]:
    database = Database(privacy_server.env["ECHO_DATABASE_URL"])
    yield database
    database.dispose()


@contextmanager
def opened(server: LiveServer) -> Iterator[Database]:
    """The server's database, its pool closed on the way out (an engine left to the garbage
    collector closes its connections at a random later moment: a ResourceWarning)."""
    database = Database(server.env["ECHO_DATABASE_URL"])
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def dev_db(dev_server: LiveServer) -> Iterator[Database]:
    with opened(dev_server) as database:
        yield database


_names = iter(range(1, 10_000))


@pytest.fixture
def privacy_upstream(privacy_server: LiveServer, upstream_server: LiveServer) -> Upstream:
    """A freshly registered provider on the privacy server (the shared upstream server)."""
    return connect_upstream(privacy_server, upstream_server, f"erasure{next(_names)}")


def pseudonym_of(server: LiveServer, sub: str) -> str:
    return Pseudonyms.from_secret(settings_for(server.env).secret_key_bytes()).of(sub)


def post_page(browser: Browser, page: str, form: dict[str, str]) -> httpx.Response:
    """Load ``page`` (signed in), then post ``form`` to it with the page's CSRF token."""
    loaded = browser.get(page)
    assert loaded.status_code == 200, loaded.text
    return browser.post(page, {"csrf_token": csrf_token(loaded.text), **form})


def export_page(browser: Browser, password: str) -> httpx.Response:
    return post_page(browser, "/account/export", {"current_password": password})


def delete_page(browser: Browser, password: str, username: str) -> httpx.Response:
    return post_page(
        browser, "/account/delete", {"current_password": password, "confirm_username": username}
    )


def rows_left(database: Database, user_id: int, sub: str) -> dict[str, int]:
    """How many rows still name the user, per table: every table with a ``user_id`` column
    (the schema's, however many there are), their users row, data keys and pseudonym map
    row; only the non-zero counts."""
    found: dict[str, int] = {}
    with database.read_session() as session:
        for table in metadata.sorted_tables:
            if "user_id" in table.c and table.name != "privacy_erasures":
                count = session.scalar(
                    select(func.count()).select_from(table).where(table.c.user_id == user_id)
                )
                found[table.name] = int(count or 0)
        found["users"] = int(
            session.scalar(
                text("SELECT count(*) FROM users WHERE id = :id OR sub = :sub"),
                {"id": user_id, "sub": sub},
            )
            or 0
        )
        found["data_keys"] = int(
            session.scalar(
                select(func.count()).select_from(DataKey).where(DataKey.owner == f"user:{user_id}")
            )
            or 0
        )
        found["audit_pseudonyms"] = int(
            session.scalar(
                select(func.count())
                .select_from(AuditPseudonym)
                .where(AuditPseudonym.user_sub == sub)
            )
            or 0
        )
    return {name: count for name, count in found.items() if count}


def events_of(database: Database, *types: str) -> list[AuditEvent]:
    with database.read_session() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type.in_(types)).order_by(AuditEvent.id)
        ).all()
        session.expunge_all()
        return list(rows)


def stored_text(database: Database, table: str) -> str:
    """Every column of every row of ``table`` as one string (to search for a value)."""
    with database.read_session() as session:
        rows = session.execute(text(f"SELECT * FROM {table}")).all()
    return "\n".join(repr(tuple(row)) for row in rows)
