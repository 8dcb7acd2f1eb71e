"""Staged signing-key rotation across worker processes, without a restart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.environment import app_environment
from tests.support.key_rotation import published_kids, rotate_es256, token_kid, verify
from tests.support.oidc import client_credentials_token
from tests.support.processes import start_server_process
from tests.support.server import LiveServer

PUBLISH_AHEAD = 10


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    env = app_environment(tmp_path / "var", database_url, ECHO_KEY_PUBLISH_AHEAD=str(PUBLISH_AHEAD))
    live = start_server_process(env, tmp_path / "server.log", workers=2)
    yield live
    live.stop()


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError("condition not reached in time")


def test_rotated_key_is_published_before_it_signs_and_old_tokens_keep_verifying(
    server: LiveServer,
) -> None:
    # Taken before the rotation: the new key cannot become active earlier than this plus the
    # publish-ahead delay, however long the rotation's own steps take on a slow machine.
    started = time.monotonic()
    rotation = rotate_es256(server, "api://rotation")

    def signing_kid() -> str:
        return token_kid(client_credentials_token(server, rotation.client)["access_token"])

    # Every worker publishes the new key within seconds (each request may hit either worker).
    _wait_for(lambda: all(rotation.new_kid in published_kids(server) for _ in range(6)), 8)
    # ...but nobody signs with it before the publish-ahead delay.
    while time.monotonic() - started < PUBLISH_AHEAD - 2:
        assert signing_kid() == rotation.old_kid
        time.sleep(0.5)

    # After the delay every worker signs with the new key.
    _wait_for(lambda: all(signing_kid() == rotation.new_kid for _ in range(6)), PUBLISH_AHEAD)
    assert time.monotonic() - started >= PUBLISH_AHEAD - 1
    # The old key stays published and its tokens still verify until they expire.
    assert rotation.old_kid in published_kids(server)
    assert verify(server, rotation.caller, rotation.old_token)
