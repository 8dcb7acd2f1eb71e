"""A staged signing key in one server: published at once, signing only after the publish-ahead
delay, the old key kept until its tokens expire. Time moves by the app's clock, not by sleeping;
tests/process/test_key_rotation.py proves the same across worker processes in real time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc import jws

from echo_identity.idp.keys import RELOAD_SECONDS
from tests.support.clock import MovableClock
from tests.support.environment import app_environment
from tests.support.oidc import client_credentials_token, register_client, service_client
from tests.support.server import LiveServer, run_cli, start_server

PUBLISH_AHEAD = 3600  # far beyond anything real time adds while the test runs


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def server(tmp_path: Path, database_url: str, clock: MovableClock) -> Iterator[LiveServer]:
    env = app_environment(tmp_path / "var", database_url, ECHO_KEY_PUBLISH_AHEAD=str(PUBLISH_AHEAD))
    live = start_server(env, tmp_path / "server.log", clock=clock)
    yield live
    live.stop()


def _kid(token: str) -> str:
    return str(jws.extract_compact(token.encode()).protected["kid"])


def _published(server: LiveServer) -> set[str]:
    return {k["kid"] for k in httpx.get(f"{server.base_url}/jwks").json()["keys"]}


def test_a_staged_key_is_published_at_once_and_signs_only_after_the_publish_ahead_delay(
    server: LiveServer, clock: MovableClock
) -> None:
    client = service_client(server, "--audience", "api://schedule")
    caller = register_client(
        server, "--name", "RS", "--grant-type", "client_credentials", "--audience", "api://schedule"
    )
    old_token = client_credentials_token(server, client)["access_token"]
    old_kid = _kid(old_token)

    rotated = run_cli(server.env, "keys", "rotate", "--alg", "ES256", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = json.loads(rotated.stdout)["created"][0]["kid"]

    clock.advance(RELOAD_SECONDS + 1)  # the server rereads its key table
    assert new_kid in _published(server)
    assert _kid(client_credentials_token(server, client)["access_token"]) == old_kid

    clock.advance(PUBLISH_AHEAD - RELOAD_SECONDS - 60)  # a minute before it is due
    assert _kid(client_credentials_token(server, client)["access_token"]) == old_kid

    clock.advance(120)  # a minute after
    assert _kid(client_credentials_token(server, client)["access_token"]) == new_kid
    assert old_kid in _published(server)  # still needed: its tokens have not expired
    verified = httpx.post(
        f"{server.base_url}/verify",
        data={"token": old_token},
        auth=(caller.client_id, caller.client_secret or ""),
    ).json()
    assert verified["active"] is True
