"""Functional tests drive a real ``echo-identity serve`` process over HTTP on a real database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import fresh_database_url
from tests.support.environment import app_environment
from tests.support.server import LiveServer, start_server


def _server(tmp_path_factory: pytest.TempPathFactory, *, production: bool) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("prod" if production else "dev")
    with fresh_database_url(tmp) as url:
        server = start_server(
            app_environment(tmp / "var", url, production=production), tmp / "server.log"
        )
        yield server
        server.stop()


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A development-mode server shared by the session (tests make their own users)."""
    yield from _server(tmp_path_factory, production=False)


@pytest.fixture(scope="session")
def prod_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A production-mode server behind one trusted proxy hop with an https issuer."""
    yield from _server(tmp_path_factory, production=True)
