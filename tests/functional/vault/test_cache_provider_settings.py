"""A provider reconfigured by another process is used by the vault's hand-out within a second
(the provider's settings are kept per process for a second: ``echo_identity.cache``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from echo_identity.db import Database
from echo_identity.vault.models import Provider
from tests.factories import create_user
from tests.support.databases import fresh_database_url
from tests.support.environment import app_environment
from tests.support.server import LiveServer, start_server
from tests.support.stopped_clock import StoppedClock
from tests.support.vault import (
    connect_upstream,
    fetch_vault_token,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, StoppedClock]]:
    tmp: Path = tmp_path_factory.mktemp("vault-cache")
    clock = StoppedClock()
    with fresh_database_url(tmp) as url:
        server = start_server(app_environment(tmp / "var", url), tmp / "server.log", clock=clock)
        try:
            yield server, clock
        finally:
            server.stop()


def test_a_token_url_changed_by_another_worker_is_used_within_one_second(
    vault: tuple[LiveServer, StoppedClock], upstream_server: LiveServer
) -> None:
    server, clock = vault
    upstream = connect_upstream(server, upstream_server, "cachedidp")
    service = vault_service_client(server, upstream.name)
    user = create_user(server.env["ECHO_DATABASE_URL"])
    run_connect_flow(server, upstream, user)
    bearer = vault_api_token(server, service)
    force = {"force_refresh": True}
    assert fetch_vault_token(server, bearer, user.sub, upstream.name, force).status_code == 200
    assert upstream.refresh_count() == 1
    other = Database(server.env["ECHO_DATABASE_URL"])  # another worker
    try:
        with other.transaction() as session:
            session.execute(
                update(Provider)
                .where(Provider.name == upstream.name)
                .values(token_url="http://127.0.0.1:9/token")  # nothing listens there
            )
    finally:
        other.dispose()

    fetch_vault_token(server, bearer, user.sub, upstream.name, force)
    assert upstream.refresh_count() == 2  # still the kept settings: the refresh reached it
    clock.advance(1.0)
    fetch_vault_token(server, bearer, user.sub, upstream.name, force)
    assert upstream.refresh_count() == 2  # the new token URL: the upstream saw nothing
