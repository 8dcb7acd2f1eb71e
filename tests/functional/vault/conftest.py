"""Vault tests run against a second, real Echo Identity instance as the upstream provider."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from echo_identity.db import Database
from tests.factories import TestUser, create_user
from tests.support.server import LiveServer, running_server
from tests.support.vault import Upstream, connect_upstream

_names = itertools.count(1)


@pytest.fixture(scope="session")
def upstream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_server(tmp_path_factory.mktemp("upstream")) as server:
        yield server


@pytest.fixture
def user(dev_server: LiveServer) -> TestUser:
    return create_user(dev_server.env["ECHO_DATABASE_URL"])


@pytest.fixture
def database(dev_server: LiveServer) -> Iterator[Database]:
    db = Database(dev_server.env["ECHO_DATABASE_URL"])
    yield db
    db.dispose()


@pytest.fixture
def upstream(dev_server: LiveServer, upstream_server: LiveServer) -> Upstream:
    """A freshly registered provider (its own upstream client) on the shared servers."""
    return connect_upstream(dev_server, upstream_server, f"idp{next(_names)}")
