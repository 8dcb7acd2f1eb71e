"""Consent withdrawal from the account pages: "Remove access" for an OIDC application (its
grants die at every endpoint, the next authorization asks again, it is audited) and the vault's
"Disconnect" (reachable from the account page, revoked upstream, tokens deleted, audited)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database
from echo_identity.idp.models import Consent
from echo_identity.vault.models import Connection, ConnectionConsent
from tests.factories import TestUser, audit_trail, create_user
from tests.support.browser import Browser, csrf_token
from tests.support.credentials import (
    SCOPE,
    Held,
    assert_alive,
    hold_credentials,
    introspect,
    redeem,
    refresh,
    userinfo,
    verify,
)
from tests.support.environment import settings_for
from tests.support.oidc import RegisteredClient, RelyingParty, web_client
from tests.support.secret_scan import echo_shaped
from tests.support.server import LiveServer
from tests.support.vault import (
    Upstream,
    fetch_vault_token,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)


@pytest.fixture
def client(dev_server: LiveServer) -> RegisteredClient:
    return web_client(dev_server)


@pytest.fixture
def server_db(dev_server: LiveServer) -> Iterator[Database]:
    database = Database(dev_server.env["ECHO_DATABASE_URL"])
    yield database
    database.dispose()


@pytest.fixture
def held(dev_server: LiveServer, client: RegisteredClient, user: TestUser) -> Held:
    """``user`` signed in, holding a token family and an unredeemed code of ``client``."""
    return hold_credentials(dev_server, client, user, user.password)


def _withdraw_path(client_id: str) -> str:
    return f"/account/applications/{client_id}/withdraw"


def _consents(database: Database, user: TestUser) -> list[str]:
    with database.session() as session:
        return list(session.scalars(select(Consent.client_id).where(Consent.user_id == user.id)))


def _events(database: Database, event_type: EventType, client_id: str) -> list[AuditEvent]:
    with database.session() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.event_type == str(event_type), AuditEvent.client_id == client_id
                )
            )
        )


def _event_count(database: Database) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count(AuditEvent.id))) or 0)


def test_removing_an_applications_access_kills_its_tokens_audits_and_asks_consent_again(
    dev_server: LiveServer,
    client: RegisteredClient,
    user: TestUser,
    held: Held,
    server_db: Database,
) -> None:
    browser = held.browser
    assert 'href="/account/applications"' in browser.get("/account").text
    page = browser.get("/account/applications").text
    assert "Test RP" in page
    assert _withdraw_path(client.client_id) in page
    assert "offline_access" in page  # the scopes granted
    assert echo_shaped(page) == []  # no token or secret on the page

    response = browser.post_form("/account/applications", _withdraw_path(client.client_id), {})
    assert response.status_code == 302
    assert response.headers["location"] == "/account/applications?withdrawn=1"

    access, refresh_token = held.token["access_token"], held.token["refresh_token"]
    verified = verify(dev_server, client, access)
    assert (verified.status_code, verified.json()["error"]) == (401, "token_revoked")
    assert introspect(dev_server, client, access) == {"active": False}
    assert introspect(dev_server, client, refresh_token) == {"active": False}
    assert refresh(dev_server, client, refresh_token).json()["error"] == "invalid_grant"
    assert userinfo(dev_server, access).status_code == 401
    assert redeem(held.pending, held.pending_location).json()["error"] == "invalid_grant"
    assert browser.get("/account").status_code == 200  # the user's own session goes on

    assert client.client_id not in _consents(server_db, user)
    assert "Test RP" not in browser.get("/account/applications?withdrawn=1").text
    [event] = _events(server_db, EventType.CONSENT_WITHDRAWN, client.client_id)
    assert event.subject == audit_trail(settings_for(dev_server.env)).pseudonyms.of(user.sub)
    assert event.details["token_families"] == 1
    assert event.details["authorization_codes"] == 1
    assert event.details["consent_deleted"] is True

    # The next authorization asks for consent again.
    party = RelyingParty(dev_server, client, SCOPE)
    try:
        again = browser.get(party.browser_path(party.authorization_url()))
    finally:
        party.close()
    assert again.status_code == 200
    assert 'name="decision" value="allow"' in again.text


def test_another_users_application_or_one_never_authorised_is_a_404_and_changes_nothing(
    dev_server: LiveServer,
    client: RegisteredClient,
    user: TestUser,
    held: Held,
    server_db: Database,
) -> None:
    other = create_user(dev_server.env["ECHO_DATABASE_URL"])
    intruder = Browser(dev_server)
    intruder.login(other.username, other.password)
    never = web_client(dev_server)  # a real client nobody authorised
    assert client.client_id not in intruder.get("/account/applications").text
    before = _event_count(server_db)
    for client_id in (client.client_id, never.client_id, "no-such-client"):
        refused = intruder.post_form("/account", _withdraw_path(client_id), {})
        assert refused.status_code == 404, refused.text
        assert "application_not_authorised" in refused.text
    refused = held.browser.post_form("/account", _withdraw_path(never.client_id), {})
    assert refused.status_code == 404
    assert _event_count(server_db) == before
    assert client.client_id in _consents(server_db, user)
    assert_alive(dev_server, client, held)


def test_remove_access_without_csrf_or_session_or_with_a_repeated_field_changes_nothing(
    dev_server: LiveServer,
    client: RegisteredClient,
    user: TestUser,
    held: Held,
    server_db: Database,
) -> None:
    path = _withdraw_path(client.client_id)
    no_csrf = held.browser.post(path, {})
    assert no_csrf.status_code == 400
    assert "csrf_failed" in no_csrf.text
    anonymous = Browser(dev_server)
    token = csrf_token(anonymous.get("/login").text)
    to_login = anonymous.post(path, {"csrf_token": token})
    assert to_login.status_code == 302
    assert to_login.headers["location"].startswith("/login")
    token = csrf_token(held.browser.get("/account/applications").text)
    body = f"csrf_token={token}&withdraw=a&withdraw=b"
    doubled = held.browser.post(
        path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert doubled.status_code == 400
    assert "invalid_request" in doubled.text
    assert _events(server_db, EventType.CONSENT_WITHDRAWN, client.client_id) == []
    assert client.client_id in _consents(server_db, user)
    assert_alive(dev_server, client, held)


@pytest.mark.parametrize("raw_path", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\x00b"])
def test_a_client_id_in_the_path_that_is_not_utf8_or_holds_nul_is_a_400(
    dev_server: LiveServer, user: TestUser, raw_path: bytes
) -> None:
    # The WSGI path as a server that passes bytes through (granian) hands it over; werkzeug's
    # own test server would first turn such bytes into valid UTF-8.
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    token = csrf_token(browser.get("/account").text)
    assert dev_server.app is not None
    path = (b"/account/applications/" + raw_path + b"/withdraw").decode("latin-1")
    cookie = browser.session_cookie_name
    response = dev_server.app.test_client().post(
        "/account/applications/x/withdraw",
        data={"csrf_token": token},
        headers={"Cookie": f"{cookie}={browser.cookies[cookie]}"},
        environ_overrides={"PATH_INFO": path},
    )
    assert response.status_code == 400
    assert "invalid_request" in response.text
    assert "The URL path" in response.text


def test_connected_accounts_are_linked_from_the_account_page_and_disconnect_is_recorded(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, server_db: Database
) -> None:
    service = vault_service_client(dev_server, upstream.name)  # before the user consents
    browser, _ = run_connect_flow(dev_server, upstream, user)
    bearer = vault_api_token(dev_server, service)
    token = fetch_vault_token(dev_server, bearer, user.sub, upstream.name).json()["access_token"]
    assert 'href="/account/connections"' in browser.get("/account").text
    assert 'href="/account/connections"' in browser.get("/account/applications").text

    response = browser.post_form(
        "/account/connections", f"/account/connections/{upstream.name}/disconnect", {}
    )
    assert response.status_code == 302
    assert upstream.introspect(token) == {"active": False}  # the provider saw the revocation
    with server_db.session() as session:
        assert session.scalars(select(Connection).where(Connection.user_id == user.id)).all() == []
        consents = session.scalars(
            select(ConnectionConsent).where(ConnectionConsent.user_id == user.id)
        ).all()
    assert consents
    assert all(c.withdrawn_at is not None for c in consents)
    pseudonym = audit_trail(settings_for(dev_server.env)).pseudonyms.of(user.sub)
    with server_db.session() as session:
        revoked = session.scalars(
            select(AuditEvent).where(
                AuditEvent.event_type == str(EventType.VAULT_CONNECTION_REVOKED),
                AuditEvent.subject == pseudonym,
            )
        ).all()
    assert [e.details["provider"] for e in revoked] == [upstream.name]
    gone = fetch_vault_token(dev_server, bearer, user.sub, upstream.name)
    assert gone.status_code == 403
