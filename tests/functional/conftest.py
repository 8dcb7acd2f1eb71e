"""Functional tests drive the real app over HTTP on a real database, in this process: each
server is ``create_app(settings)`` behind werkzeug's threaded server in a daemon thread
(``tests/support/server.py``); set-up goes through ``tests/factories.py``. Real processes are
``tests/process/``'s."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.factories import TestUser, create_user
from tests.support.server import LiveServer, running_server
from tests.support.vault import Upstream, connect_upstream

_provider_names = itertools.count(1)


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A development-mode server shared by the session (tests make their own users)."""
    with running_server(tmp_path_factory.mktemp("dev")) as server:
        yield server


@pytest.fixture(scope="session")
def prod_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A production-mode server behind one trusted proxy hop with an https issuer, with the
    default token failure limit (its callers come from addresses of their own)."""
    with running_server(
        tmp_path_factory.mktemp("prod"), production=True, ECHO_TOKEN_FAILURE_RATE_LIMIT="30/minute"
    ) as server:
        yield server


@pytest.fixture(scope="session")
def upstream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A second development server: the third-party OAuth provider of vault tests."""
    with running_server(tmp_path_factory.mktemp("upstream")) as server:
        yield server


@pytest.fixture
def user(dev_server: LiveServer) -> TestUser:
    """A fresh user on the shared development server."""
    return create_user(dev_server.env["ECHO_DATABASE_URL"])


@pytest.fixture
def upstream(dev_server: LiveServer, upstream_server: LiveServer) -> Upstream:
    """A freshly registered provider (its own upstream client) on the shared servers."""
    return connect_upstream(dev_server, upstream_server, f"idp{next(_provider_names)}")
