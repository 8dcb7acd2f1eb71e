"""Connect-flow refusals, reconnecting, the worker, and the OpenAPI document."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select, update

from echo_identity.audit.event_search import FILTERS
from echo_identity.db import Database, utcnow
from echo_identity.vault.models import Connection
from tests.factories import TestUser
from tests.support.browser import Browser
from tests.support.server import LiveServer, run_cli
from tests.support.vault import (
    Upstream,
    fetch_vault_token,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)


def _connections(database: Database, user: TestUser) -> list[Connection]:
    with database.session() as session:
        return list(session.scalars(select(Connection).where(Connection.user_id == user.id)))


def test_connect_page_explains_what_why_and_how_long(
    dev_server: LiveServer, upstream: Upstream, user: TestUser
) -> None:
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    page = browser.get(f"/connections/{upstream.name}/connect").text
    for fragment in (
        "What is stored",
        "Why",
        "For how long",
        'name="decision" value="allow"',
        'name="decision" value="deny"',
    ):
        assert fragment in page


def test_denying_consent_stores_nothing_and_never_contacts_the_provider(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    response = browser.post_form(
        f"/connections/{upstream.name}/connect",
        f"/connections/{upstream.name}/connect",
        {"decision": "deny"},
    )
    assert response.headers["location"] == "/account/connections"
    assert _connections(database, user) == []


def test_callback_with_a_forged_state_is_refused(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    browser.post_form(
        f"/connections/{upstream.name}/connect",
        f"/connections/{upstream.name}/connect",
        {"decision": "allow"},
    )
    response = browser.get("/connections/callback?code=stolen&state=forged")
    assert response.status_code == 400
    assert "invalid_state" in response.text
    assert _connections(database, user) == []


def test_reconnecting_replaces_the_connection(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    run_connect_flow(dev_server, upstream, user)
    first = _connections(database, user)[0].access_token_ciphertext
    run_connect_flow(dev_server, upstream, user)
    connections = _connections(database, user)
    assert len(connections) == 1
    assert connections[0].access_token_ciphertext != first


def test_user_disconnects_from_the_account_page_and_the_upstream_token_dies(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    service = vault_service_client(dev_server, upstream.name)  # before the user consents
    browser, _ = run_connect_flow(dev_server, upstream, user)
    bearer = vault_api_token(dev_server, service)
    token = fetch_vault_token(dev_server, bearer, user.sub, upstream.name).json()["access_token"]
    response = browser.post_form(
        "/account/connections", f"/account/connections/{upstream.name}/disconnect", {}
    )
    assert response.status_code == 302
    assert upstream.introspect(token) == {"active": False}
    assert _connections(database, user) == []


def test_worker_refreshes_due_connections_once(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    run_connect_flow(dev_server, upstream, user)
    with database.transaction() as session:
        session.execute(
            update(Connection)
            .where(Connection.user_id == user.id)
            .values(refresh_due_at=utcnow() - timedelta(seconds=1))
        )
    result = run_cli(dev_server.env, "worker", "--once", "--json")
    assert result.returncode == 0, result.stderr
    assert upstream.refresh_count() == 1
    connection = _connections(database, user)[0]
    assert connection.refresh_due_at is not None
    assert connection.refresh_due_at > utcnow()
    again = run_cli(dev_server.env, "worker", "--once", "--json")
    assert again.returncode == 0
    assert upstream.refresh_count() == 1  # nothing was due any more


def test_worker_deletes_expired_tokens_that_cannot_be_refreshed(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    run_connect_flow(dev_server, upstream, user)
    with database.transaction() as session:
        session.execute(
            update(Connection)
            .where(Connection.user_id == user.id)
            .values(refresh_token_ciphertext=None, expires_at=utcnow() - timedelta(seconds=1))
        )
    assert run_cli(dev_server.env, "worker", "--once").returncode == 0
    connection = _connections(database, user)[0]
    assert connection.access_token_ciphertext is None
    assert connection.status == "expired"


def test_openapi_document_describes_exactly_the_api_v1_routes(dev_server: LiveServer) -> None:
    document = httpx.get(f"{dev_server.base_url}/api/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert operations == {
        ("/users/{sub}/connections", "get"),
        ("/users/{sub}/connections/{provider}/token", "post"),
        ("/users/{sub}/connections/{provider}", "delete"),
        ("/audit/events", "get"),
    }
    filters = {p["name"] for p in document["paths"]["/audit/events"]["get"]["parameters"]}
    assert filters == set(FILTERS)  # every filter the API accepts, and only those


def test_providers_list_never_shows_the_client_secret(
    dev_server: LiveServer, upstream: Upstream
) -> None:
    listing = run_cli(dev_server.env, "providers", "list", "--json")
    assert upstream.name in listing.stdout
    assert upstream.client.client_secret
    assert upstream.client.client_secret not in listing.stdout
