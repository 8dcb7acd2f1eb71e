"""Finding 7: unauthenticated traffic must not grow the database at line rate.

Against a real server, N unauthenticated requests of each kind an attacker can send for free
(anonymous pages, bearer APIs without or with a garbage token, a brute force run into the login
rate limit, a token request from a client that does not exist) grow the database, counted table
by table (and Redis key by key in the Redis suite), by a small constant however large N is.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pytest
import redis
from sqlalchemy import func, inspect, select, table
from sqlalchemy.orm import Session

from echo_identity.audit.detection import to_record
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent, RefusalWindow
from echo_identity.audit.rules import weight
from echo_identity.db import Database
from tests.factories import create_user
from tests.support.browser import Browser, csrf_token
from tests.support.databases import fresh_database_url
from tests.support.environment import app_environment, settings_for
from tests.support.server import LiveServer, run_cli, start_server

N = 60
# Rows one kind of refusal may add whatever N is: its first event, its window's counter row,
# and what a rate limit lets through before it closes (LOGIN_LIMIT failed sign-ins, and the
# pseudonym map row of the account they were about).
BOUND = 6
LOGIN_LIMIT = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A development server with a tight login limit, and neither a worker pass nor the end of
    a refusal window during the test (each would add a constant number of rows, at a time the
    test does not control)."""
    tmp = tmp_path_factory.mktemp("bounded")
    with fresh_database_url(tmp) as url:
        env = app_environment(
            tmp / "var",
            url,
            ECHO_LOGIN_RATE_LIMIT=f"{LOGIN_LIMIT}/hour",
            ECHO_WORKER_INTERVAL="3600",  # in-process: no worker at all; the counts stay still
            ECHO_AUDIT_REFUSAL_WINDOW="3600",
        )
        live = start_server(env, tmp / "server.log")
        try:
            yield live
        finally:
            live.stop()


@contextmanager
def server_database_writes(server: LiveServer) -> Iterator[Session]:
    database = Database(server.env["ECHO_DATABASE_URL"])
    try:
        with database.transaction() as session:
            yield session
    finally:
        database.dispose()


@contextmanager
def server_database(server: LiveServer) -> Iterator[Session]:
    database = Database(server.env["ECHO_DATABASE_URL"])
    try:
        with database.read_session() as session:
            yield session
    finally:
        database.dispose()


def stored_rows(server: LiveServer) -> Counter[str]:
    """Rows in every table of the server's database, plus its Redis keys when it uses Redis."""
    with server_database(server) as session:
        names = inspect(session.connection()).get_table_names()
        counts = Counter(
            {
                name: int(session.scalar(select(func.count()).select_from(table(name))) or 0)
                for name in names
            }
        )
    if server.env.get("ECHO_REDIS_URL"):
        settings = settings_for(server.env)
        client = redis.Redis.from_url(server.env["ECHO_REDIS_URL"])
        try:
            counts["redis keys"] = len(list(client.scan_iter(match=f"{settings.redis_namespace}*")))
        finally:
            client.close()
    return counts


def event_types(server: LiveServer) -> Counter[str]:
    with server_database(server) as session:
        rows = session.execute(
            select(AuditEvent.event_type, func.count()).group_by(AuditEvent.event_type)
        )
        return Counter({str(kind): int(count) for kind, count in rows})


def growth(server: LiveServer, attack: Callable[[], None]) -> dict[str, int]:
    before = stored_rows(server)
    attack()
    after = stored_rows(server)
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


def assert_bounded(grown: dict[str, int]) -> None:
    assert sum(grown.values()) <= BOUND, f"{N} requests grew the database by {grown}"


def _sign_in(server: LiveServer, username: str, password: str) -> None:
    assert Browser(server).login(username, password).status_code == 302


def random_sub() -> str:
    return secrets.token_hex(16)


def _repeat(request: Callable[[int], httpx.Response], *statuses: int) -> Callable[[], None]:
    def attack() -> None:
        for index in range(N):
            response = request(index)
            assert response.status_code in statuses, (response.status_code, response.text)

    return attack


def test_anonymous_login_pages_store_no_session(server: LiveServer) -> None:
    grown = growth(server, _repeat(lambda _i: httpx.get(f"{server.base_url}/login"), 200))
    assert grown == {}, f"{N} anonymous page views grew the database by {grown}"
    # The count does see a session once one is needed: signing in stores one.
    user = create_user(server.env["ECHO_DATABASE_URL"])
    signed_in = growth(server, lambda: _sign_in(server, user.username, user.password))
    assert signed_in.get("browser_sessions", 0) + signed_in.get("redis keys", 0) >= 1


@pytest.mark.parametrize("call", ["list connections", "fetch a token"])
@pytest.mark.parametrize("token", [None, "garbage"], ids=["no token", "garbage token"])
def test_vault_api_calls_for_random_users_grow_the_database_by_a_constant(
    server: LiveServer, call: str, token: str | None
) -> None:
    def request(index: int) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}-{index}"} if token else {}
        connections = f"{server.base_url}/api/v1/users/{random_sub()}/connections"
        if call == "list connections":
            return httpx.get(connections, headers=headers)
        return httpx.post(f"{connections}/x/token", headers=headers, json={"min_ttl": 0})

    grown = growth(server, _repeat(request, 401))
    assert "audit_pseudonyms" not in grown  # random subjects are no users
    assert_bounded(grown)


@pytest.mark.parametrize("path", ["/userinfo", "/log"])
def test_bearer_endpoints_without_a_token_grow_the_database_by_a_constant(
    server: LiveServer, path: str
) -> None:
    def request(_index: int) -> httpx.Response:
        if path == "/log":
            return httpx.post(f"{server.base_url}{path}", json={"message": "probe"})
        return httpx.get(f"{server.base_url}{path}")

    assert_bounded(growth(server, _repeat(request, 401)))


def test_a_brute_force_into_the_login_limit_grows_the_database_by_a_constant(
    server: LiveServer,
) -> None:
    user = create_user(server.env["ECHO_DATABASE_URL"])
    browser = Browser(server)
    token = csrf_token(browser.get("/login").text)

    def guess(index: int) -> httpx.Response:
        form = {"csrf_token": token, "username": user.username, "password": f"guess-{index}"}
        return browser.post("/login", form)

    before = event_types(server)
    grown = growth(server, _repeat(guess, 401, 429))
    assert_bounded(grown)
    # Still on record: the failures the limit let through, and the lock-out with its count.
    recorded = event_types(server) - before
    assert 1 <= recorded["auth.login.failure"] <= LOGIN_LIMIT
    assert recorded["auth.login.locked"] == 1


def test_token_requests_from_unknown_clients_grow_the_database_by_a_constant(
    server: LiveServer,
) -> None:
    def request(_index: int) -> httpx.Response:
        form = {
            "grant_type": "client_credentials",
            "client_id": "nobody-" + secrets.token_hex(8),
            "client_secret": secrets.token_urlsafe(24),
        }
        return httpx.post(f"{server.base_url}/token", data=form)

    assert_bounded(growth(server, _repeat(request, 400, 401, 429)))


def test_the_row_count_itself_sees_every_table(server: LiveServer) -> None:
    # Guard against a counter that silently sees nothing: the tables of a migrated database.
    counted = stored_rows(server)
    for name in ("audit_events", "audit_pseudonyms", "browser_sessions", "audit_refusal_windows"):
        assert name in counted


def test_the_worker_writes_each_window_count_so_the_trail_still_tells_how_many(
    server: LiveServer,
) -> None:
    url = f"{server.base_url}/api/v1/users/{random_sub()}/connections"
    _repeat(lambda _i: httpx.get(url), 401)()
    denied = str(EventType.VAULT_TOKEN_DENIED)
    before = refusals_told(server, denied)
    assert before["open windows"] >= 1
    # The worker below closes windows older than one second: age them by two (no waiting).
    with server_database_writes(server) as session:
        for window in session.scalars(
            select(RefusalWindow).where(RefusalWindow.event_type == denied)
        ):
            window.window_started_at -= timedelta(seconds=2)
    result = run_cli({**server.env, "ECHO_AUDIT_REFUSAL_WINDOW": "1"}, "worker", "--once")
    assert result.returncode == 0, result.stderr
    after = refusals_told(server, denied)
    assert after["open windows"] == 0
    assert after["refusals"] == before["refusals"] >= N  # every refusal accounted for


def refusals_told(server: LiveServer, event_type: str) -> Counter[str]:
    """How many refusals of ``event_type`` the trail accounts for (events weighed as the
    detection rules weigh them, plus what open windows counted beyond their first event)."""
    with server_database(server) as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.event_type == event_type))
        told = sum(weight(to_record(event)) for event in events)
        windows = list(
            session.scalars(select(RefusalWindow).where(RefusalWindow.event_type == event_type))
        )
    pending = sum(window.count - 1 for window in windows)
    return Counter({"refusals": told + pending, "open windows": len(windows)})
