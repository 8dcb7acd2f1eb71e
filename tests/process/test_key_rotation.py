"""Staged signing-key rotation across worker processes, without a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jws

from tests.support.environment import app_environment
from tests.support.oidc import client_credentials_token, register_client, service_client
from tests.support.processes import start_server_process
from tests.support.server import LiveServer, run_cli

PUBLISH_AHEAD = 10


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    env = app_environment(tmp_path / "var", database_url, ECHO_KEY_PUBLISH_AHEAD=str(PUBLISH_AHEAD))
    live = start_server_process(env, tmp_path / "server.log", workers=2)
    yield live
    live.stop()


def _kid(token: str) -> str:
    return str(jws.extract_compact(token.encode()).protected["kid"])


def _published(server: LiveServer) -> set[str]:
    return {k["kid"] for k in httpx.get(f"{server.base_url}/jwks").json()["keys"]}


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError("condition not reached in time")


def _verify(server: LiveServer, caller: Any, token: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.post(
        f"{server.base_url}/verify",
        data={"token": token},
        auth=(caller.client_id, caller.client_secret),
    ).json()
    return answer


def test_rotated_key_is_published_before_it_signs_and_old_tokens_keep_verifying(
    server: LiveServer,
) -> None:
    client = service_client(server, "--audience", "api://rotation")
    caller = register_client(
        server, "--name", "RS", "--grant-type", "client_credentials", "--audience", "api://rotation"
    )
    old_token = client_credentials_token(server, client)["access_token"]
    old_kid = _kid(old_token)

    rotated = run_cli(server.env, "keys", "rotate", "--alg", "ES256", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = json.loads(rotated.stdout)["created"][0]["kid"]
    started = time.monotonic()

    # Every worker publishes the new key within seconds (each request may hit either worker).
    _wait_for(lambda: all(new_kid in _published(server) for _ in range(6)), 8)
    # ...but nobody signs with it before the publish-ahead delay.
    while time.monotonic() - started < PUBLISH_AHEAD - 2:
        assert _kid(client_credentials_token(server, client)["access_token"]) == old_kid
        time.sleep(0.5)

    # After the delay every worker signs with the new key.
    _wait_for(
        lambda: all(
            _kid(client_credentials_token(server, client)["access_token"]) == new_kid
            for _ in range(6)
        ),
        PUBLISH_AHEAD,
    )
    assert time.monotonic() - started >= PUBLISH_AHEAD - 1
    # The old key stays published and its tokens still verify until they expire.
    assert old_kid in _published(server)
    assert _verify(server, caller, old_token)["active"] is True
