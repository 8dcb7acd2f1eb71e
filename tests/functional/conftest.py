"""Functional tests drive a real ``echo-identity serve`` process over HTTP on a real database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import LiveServer, running_server


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A development-mode server shared by the session (tests make their own users)."""
    with running_server(tmp_path_factory.mktemp("dev")) as server:
        yield server


@pytest.fixture(scope="session")
def prod_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A production-mode server behind one trusted proxy hop with an https issuer."""
    with running_server(tmp_path_factory.mktemp("prod"), production=True) as server:
        yield server
