"""Vault tests run against a second, real Echo Identity instance as the upstream provider
(the ``upstream_server`` and ``upstream`` fixtures of ``tests/functional/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from echo_identity.db import Database
from tests.support.server import LiveServer


@pytest.fixture
def database(dev_server: LiveServer) -> Iterator[Database]:
    db = Database(dev_server.env["ECHO_DATABASE_URL"])
    yield db
    db.dispose()
