"""Degraded operation (issue 10, findings 6 and 10): a store goes away under a running server.

- Redis down (finding 6): ``/readyz`` says so, sign-ins and token requests fail closed with a
  clean 503, and everything comes back by itself when Redis does. Runs against a private
  ``redis-server`` the test kills and restarts (never the shared one), in the Redis suite.
- Database down (finding 10): ``/jwks`` and discovery keep answering from memory, ``/readyz``
  says the database is unavailable, and a rotation made after it is back is picked up. A running
  server's database can only go away over the network, so the server test is PostgreSQL's
  (through a relay the test cuts); on SQLite the key cache is shown in-process with a database
  whose directory disappears.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from echo_identity import migrations
from echo_identity.db import Database
from echo_identity.idp.keys import RELOAD_SECONDS, SigningKeys, ensure_signing_keys
from echo_identity.idp.provider import key_schedule
from echo_identity.keys.kek_providers import keyring_factory
from tests.factories import TestUser, create_user
from tests.support.browser import Browser, csrf_token
from tests.support.clock import MovableClock
from tests.support.databases import POSTGRES_URL, fresh_database_url
from tests.support.environment import app_environment, settings_for
from tests.support.oidc import client_credentials_token, service_client
from tests.support.outages import database_proxy, private_redis
from tests.support.server import LiveServer, run_cli, start_server


def _sign_in(browser: Browser, user: TestUser) -> httpx.Response:
    """Sign in as a person does: load the form, submit it. The form's answer if it failed,
    else the answer to the submission."""
    page = browser.get("/login", headers={"Accept": "text/html"})
    if page.status_code != 200:
        return page
    return browser.post(
        "/login",
        {"csrf_token": csrf_token(page.text), "username": user.username, "password": user.password},
        headers={"Accept": "text/html"},
    )


def _assert_clean_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert "service_unavailable" in response.text
    assert "Traceback" not in response.text
    for internals in ("ConnectionError", "OperationalError", "redis://", "postgresql"):
        assert internals not in response.text


def _wait_until_ready(server: LiveServer, seconds: float = 10) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        ready = httpx.get(f"{server.base_url}/readyz", timeout=5)
        if ready.status_code == 200 or time.monotonic() > deadline:
            return ready
        time.sleep(0.2)


def _token_request(server: LiveServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=10,
    )


@pytest.mark.redis  # needs redis-server (a private one); runs in `make test-redis`
def test_with_redis_down_readyz_names_it_sign_ins_get_503_and_both_recover_by_themselves(
    tmp_path: Path, database_url: str
) -> None:
    with private_redis() as redis_server:
        env = app_environment(
            tmp_path / "var",
            database_url,
            ECHO_REDIS_URL=redis_server.url,
            ECHO_REDIS_PREFIX="echo-degraded",
        )
        server = start_server(env, tmp_path / "server.log")
        try:
            user = create_user(database_url)
            service = service_client(server)
            signed_in = Browser(server)
            assert _sign_in(signed_in, user).status_code == 302
            assert httpx.get(f"{server.base_url}/readyz").status_code == 200

            redis_server.stop()
            ready = httpx.get(f"{server.base_url}/readyz", timeout=5)
            assert ready.status_code == 503
            assert ready.json() == {
                "status": "unavailable",
                "checks": {"database": "ok", "redis": "unavailable"},
            }
            assert str(redis_server.port) not in ready.text
            _assert_clean_unavailable(_sign_in(Browser(server), user))
            _assert_clean_unavailable(signed_in.get("/account", headers={"Accept": "text/html"}))
            refused = _token_request(server, service.client_id, service.client_secret or "")
            _assert_clean_unavailable(refused)
            assert refused.json()["error"] == "service_unavailable"
            assert httpx.get(f"{server.base_url}/healthz").status_code == 200  # alive: no restart
            assert httpx.get(f"{server.base_url}/jwks").status_code == 200  # keys need no Redis

            redis_server.start()  # empty: the sessions it held are gone, as after a real loss
            ready = _wait_until_ready(server)
            assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
            again = Browser(server)
            assert _sign_in(again, user).status_code == 302
            assert again.get("/account").status_code == 200
            client_credentials_token(server, service)
        finally:
            server.stop()


@pytest.mark.postgres  # a running server's database goes away over the network
def test_during_a_database_outage_jwks_and_discovery_answer_from_memory(
    tmp_path: Path,
) -> None:
    assert POSTGRES_URL, "set ECHO_TEST_DATABASE_URL (make test-postgres)"
    with fresh_database_url(tmp_path) as url, database_proxy(url) as proxy:
        clock = MovableClock()
        server = start_server(
            app_environment(tmp_path / "var", proxy.url), tmp_path / "server.log", clock=clock
        )
        try:
            service = service_client(server)
            keys_before = httpx.get(f"{server.base_url}/jwks").json()
            metadata_before = httpx.get(f"{server.base_url}/.well-known/openid-configuration")

            proxy.cut()
            clock.advance(RELOAD_SECONDS + 0.5)  # past the reload interval: /jwks asks the database
            for _ in range(3):
                jwks = httpx.get(f"{server.base_url}/jwks", timeout=10)
                assert jwks.status_code == 200, jwks.text
                assert jwks.json() == keys_before
            metadata = httpx.get(f"{server.base_url}/.well-known/openid-configuration", timeout=10)
            assert metadata.status_code == 200
            assert metadata.json() == metadata_before.json()
            ready = httpx.get(f"{server.base_url}/readyz", timeout=10)
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] == "unavailable"
            refused = _token_request(server, service.client_id, service.client_secret or "")
            _assert_clean_unavailable(refused)

            proxy.restore()
            assert _wait_until_ready(server).status_code == 200
            rotated = run_cli(server.env, "keys", "rotate", "--alg", "ES256", "--json")
            assert rotated.returncode == 0, rotated.stderr
            clock.advance(RELOAD_SECONDS + 0.5)  # the next read reloads the key table
            published = {k["kid"] for k in httpx.get(f"{server.base_url}/jwks").json()["keys"]}
            assert published > {k["kid"] for k in keys_before["keys"]}  # the rotation arrived
            client_credentials_token(server, service)
        finally:
            server.stop()


def test_key_set_is_served_from_memory_while_the_database_file_is_gone(tmp_path: Path) -> None:
    home = tmp_path / "volume"
    home.mkdir()
    url = f"sqlite:///{home / 'echo.db'}"
    settings = settings_for(app_environment(tmp_path / "var", url))
    database = Database(url)
    try:
        migrations.upgrade(database)
        ensure_signing_keys(database, keyring_factory(settings), key_schedule(settings))
        clock = MovableClock()
        keys = SigningKeys(database, keyring_factory(settings), key_schedule(settings), clock)
        before = keys.jwks()

        database.dispose()  # no open connection survives: every read must open the file
        home.rename(tmp_path / "unmounted")
        # Past the reload interval (the clock moved, no waiting): the next read asks the
        # missing database and must keep the keys it has.
        clock.advance(RELOAD_SECONDS + 0.1)
        assert keys.jwks() == before
        assert keys.signing_key("ES256").kid in {k["kid"] for k in before["keys"]}

        (tmp_path / "unmounted").rename(home)
    finally:
        database.dispose()
