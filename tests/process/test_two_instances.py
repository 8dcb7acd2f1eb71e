"""Two ``echo-identity serve`` processes on one PostgreSQL + Redis: one deployment behind a load
balancer (same database schema, Redis prefix, secrets and issuer; different ports).

What one instance decides, the other honours: a code issued at A is redeemed at B and its replay
at A revokes the family; the login rate limit counts attempts at both; two worker passes in
separate processes refresh each due vault connection exactly once.

Needs ECHO_TEST_DATABASE_URL and ECHO_TEST_REDIS_URL: ``make test-instances``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from echo_identity.db import Database, utcnow
from echo_identity.vault.models import Connection
from tests.factories import create_user
from tests.support.browser import Browser, csrf_token
from tests.support.databases import POSTGRES_URL, fresh_database_url
from tests.support.environment import app_environment, process_environment
from tests.support.oidc import REDIRECT_URI, RegisteredClient, RelyingParty, query_of, web_client
from tests.support.processes import start_server_process as start_server
from tests.support.server import LiveServer
from tests.support.vault import Upstream, connect_upstream, run_connect_flow

pytestmark = pytest.mark.instances

LOGIN_LIMIT = 10  # per client IP and minute, across the deployment
DUE_CONNECTIONS = 4

# One worker pass in a process of its own, started the way `echo-identity worker` starts; it
# signals READY once set up and runs its pass when GO appears, so the passes really overlap.
WORKER_PASS = """
import json, sys, time
from pathlib import Path
from echo_identity.cli.runtime import database_or_exit, settings_or_exit
from echo_identity.worker import build_worker, run_pass

settings = settings_or_exit()
jobs = build_worker(settings, database_or_exit(settings))
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.005)
result = run_pass(jobs)
print(json.dumps({"refreshed": result.refreshed, "failed": result.failed}))
"""


@dataclass
class Deployment:
    a: LiveServer
    b: LiveServer
    database_url: str


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    assert POSTGRES_URL, "set ECHO_TEST_DATABASE_URL (make test-instances)"
    assert os.environ.get("ECHO_TEST_REDIS_URL"), "set ECHO_TEST_REDIS_URL (make test-instances)"
    tmp = tmp_path_factory.mktemp("instances")
    with ExitStack() as stack:
        url = stack.enter_context(fresh_database_url(tmp))
        env = app_environment(
            tmp / "var-a",
            url,
            ECHO_LOGIN_RATE_LIMIT=f"{LOGIN_LIMIT}/minute",
            ECHO_TRUSTED_PROXY_HOPS="1",  # the balancer says who the client is
            ECHO_WORKER_INTERVAL="3600",  # the dev servers' own worker threads stay out of it
        )
        a = start_server(env, tmp / "a.log")  # sets the issuer: A's URL, the balancer's
        stack.callback(a.stop)
        b = start_server({**env, "ECHO_VAR_DIR": str(tmp / "var-b")}, tmp / "b.log", migrate=False)
        stack.callback(b.stop)
        assert a.env["ECHO_ISSUER"] == b.env["ECHO_ISSUER"]
        assert a.env["ECHO_REDIS_PREFIX"] == b.env["ECHO_REDIS_PREFIX"]
        yield Deployment(a, b, url)


@pytest.fixture(scope="module")
def upstream(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Upstream]:
    """A third-party OAuth provider (another Echo instance, on SQLite: its engine is not under
    test), registered with the deployment's vault and the vault with it."""
    tmp = tmp_path_factory.mktemp("provider")
    env = app_environment(tmp / "var", f"sqlite:///{tmp / 'provider.db'}")
    provider = start_server(env, tmp / "provider.log")
    try:
        yield connect_upstream(deployment.a, provider, "upstream")
    finally:
        provider.stop()


def _token(server: LiveServer, client: RegisteredClient, **data: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/token",
        data=data,
        auth=(client.client_id, client.client_secret or ""),
        timeout=10,
    )


def _active(server: LiveServer, client: RegisteredClient, token: str) -> bool:
    answer: dict[str, Any] = httpx.post(
        f"{server.base_url}/introspect",
        data={"token": token},
        auth=(client.client_id, client.client_secret or ""),
        timeout=10,
    ).json()
    return bool(answer["active"])


def test_code_issued_at_a_is_redeemed_at_b_and_its_replay_at_a_revokes_the_family(
    deployment: Deployment,
) -> None:
    a, b = deployment.a, deployment.b
    user = create_user(deployment.database_url)
    client = web_client(a)
    party = RelyingParty(a, client, "openid offline_access")
    try:
        browser = Browser(a)
        assert browser.login(user.username, user.password).status_code == 302
        code = query_of(party.authorize(browser))["code"]
    finally:
        party.close()
    redemption = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": party.code_verifier,
    }

    at_b = _token(b, client, **redemption)
    assert at_b.status_code == 200, at_b.text
    tokens = at_b.json()
    assert _active(a, client, tokens["access_token"])  # A knows B's token

    replay = _token(a, client, **redemption)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert not _active(a, client, tokens["access_token"])
    assert not _active(b, client, tokens["access_token"])
    for server in (b, a):
        refused = _token(
            server, client, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "invalid_grant"


def _sign_in_attempt(server: LiveServer, client_ip: str) -> int:
    """One wrong sign-in through the balancer from ``client_ip``: load the form, submit it."""
    forwarded = {"X-Forwarded-For": client_ip}
    browser = Browser(server)
    page = browser.get("/login", headers=forwarded)
    answer = browser.post(
        "/login",
        {
            "csrf_token": csrf_token(page.text),
            "username": f"nobody-{secrets.token_hex(4)}",
            "password": "wrong",
        },
        headers=forwarded,
    )
    return answer.status_code


def test_login_rate_limit_counts_attempts_at_both_instances(deployment: Deployment) -> None:
    a, b = deployment.a, deployment.b
    client_ip = f"203.0.113.{secrets.randbelow(200) + 1}"
    split = [
        _sign_in_attempt(server, client_ip) for _ in range(LOGIN_LIMIT // 2) for server in (a, b)
    ]
    assert split == [401] * LOGIN_LIMIT  # each instance saw only half the limit
    assert _sign_in_attempt(a, client_ip) == 429
    assert _sign_in_attempt(b, client_ip) == 429
    assert _sign_in_attempt(b, "198.51.100.9") == 401  # another client is not limited


def _due_connections(database: Database, user_ids: list[int]) -> list[Connection]:
    with database.session() as session:
        return list(session.scalars(select(Connection).where(Connection.user_id.in_(user_ids))))


def test_two_worker_processes_refresh_each_due_connection_exactly_once(
    deployment: Deployment, upstream: Upstream, tmp_path: Path
) -> None:
    a = deployment.a
    users = [create_user(deployment.database_url) for _ in range(DUE_CONNECTIONS)]
    for user in users:
        run_connect_flow(a, upstream, user)
    database = Database(deployment.database_url)
    try:
        ids = [user.id for user in users]
        with database.transaction() as session:
            session.execute(
                update(Connection)
                .where(Connection.user_id.in_(ids))
                .values(refresh_due_at=utcnow() - timedelta(seconds=1))
            )
        before = upstream.refresh_count()

        go = tmp_path / "go"
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER_PASS, str(tmp_path / f"ready-{n}"), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=process_environment(a.env),
            )
            for n in range(2)
        ]
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{n}").exists() for n in range(2)):
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            assert time.monotonic() < deadline, "the worker processes did not start"
            time.sleep(0.05)
        go.touch()
        results = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))

        assert upstream.refresh_count() - before == DUE_CONNECTIONS
        # (A pass counts a connection the other pass refreshed first as "failed": not refreshed.)
        assert sum(r["refreshed"] for r in results) == DUE_CONNECTIONS
        now = utcnow()
        for connection in _due_connections(database, ids):
            assert connection.status == "active"
            assert connection.refresh_due_at is not None
            assert connection.refresh_due_at > now
    finally:
        database.dispose()
