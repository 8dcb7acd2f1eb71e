"""A staged signing key in one server: published at once, signing only after the publish-ahead
delay, the old key kept until its tokens expire. Time moves by the app's clock, not by sleeping;
tests/process/test_key_rotation.py proves the same across worker processes in real time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from echo_identity.idp.keys import RELOAD_SECONDS
from tests.support.clock import MovableClock
from tests.support.environment import app_environment
from tests.support.key_rotation import published_kids, rotate_es256, token_kid, verify
from tests.support.oidc import client_credentials_token
from tests.support.server import LiveServer, start_server

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


def test_a_staged_key_is_published_at_once_and_signs_only_after_the_publish_ahead_delay(
    server: LiveServer, clock: MovableClock
) -> None:
    rotation = rotate_es256(server, "api://schedule")

    def signing_kid() -> str:
        return token_kid(client_credentials_token(server, rotation.client)["access_token"])

    clock.advance(RELOAD_SECONDS + 1)  # the server rereads its key table
    assert rotation.new_kid in published_kids(server)
    assert signing_kid() == rotation.old_kid

    clock.advance(PUBLISH_AHEAD - RELOAD_SECONDS - 60)  # a minute before it is due
    assert signing_kid() == rotation.old_kid

    clock.advance(120)  # a minute after
    assert signing_kid() == rotation.new_kid
    assert rotation.old_kid in published_kids(server)  # still needed: its tokens live on
    assert verify(server, rotation.caller, rotation.old_token)
