"""Credentials die with their owner (issue 10, findings 3 and 4).

Disabling a user, an administrator's password reset and the user's own password change end
every browser session, authorization code and token family of that user, and make the access
tokens already issued to them inactive at /verify, /introspect and /userinfo. Other users keep
theirs, and credentials minted right after the change work normally.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select, update

from echo_identity.accounts.credentials import revoke_user_credentials
from echo_identity.accounts.models import User
from echo_identity.audit import pseudonyms
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database, utcnow
from echo_identity.services import build_services
from tests.factories import TestUser, create_user
from tests.support.browser import Browser
from tests.support.credentials import (
    SCOPE,
    assert_alive,
    assert_dead,
    hold_credentials,
    introspect,
    reaches_account,
    redeem,
    refresh,
    verify,
)
from tests.support.environment import settings_for
from tests.support.oidc import RegisteredClient, RelyingParty, web_client
from tests.support.server import LiveServer, run_cli

NEW_PASSWORD = "a-new-password-after-the-change"
CAUSES = ["users disable", "users set-password", "own password change"]
CAUSE_EVENTS = {
    "users disable": EventType.USER_DISABLED,
    "users set-password": EventType.PASSWORD_CHANGED,
    "own password change": EventType.PASSWORD_CHANGED,
}


@pytest.fixture(scope="module")
def client(dev_server: LiveServer) -> RegisteredClient:
    """A confidential web application (code + refresh grants) that also calls /verify."""
    return web_client(dev_server)


@pytest.fixture
def server_db(dev_server: LiveServer) -> Iterator[Database]:
    database = Database(dev_server.env["ECHO_DATABASE_URL"])
    yield database
    database.dispose()


def _change_own_password(server: LiveServer, user: TestUser, **form: str) -> Browser:
    """Sign in a second browser and change the password there; returns that browser."""
    browser = Browser(server)
    assert browser.login(user.username, user.password).status_code == 302
    response = browser.post_form(
        "/account/password",
        "/account/password",
        {
            "current_password": user.password,
            "new_password": NEW_PASSWORD,
            "new_password_confirmation": NEW_PASSWORD,
            **form,
        },
    )
    assert response.status_code == 302, response.text
    assert response.headers["location"] == "/account/password?changed=1"
    return browser


def _revoke(server: LiveServer, user: TestUser, cause: str) -> dict[str, Any] | Browser:
    """Apply ``cause``: the CLI's JSON output, or the browser that changed its password."""
    if cause == "own password change":
        return _change_own_password(server, user)
    if cause == "users disable":
        result = run_cli(server.env, "users", "disable", user.username, "--json")
    else:
        result = run_cli(
            server.env,
            "users",
            "set-password",
            user.username,
            "--password-stdin",
            "--json",
            stdin=NEW_PASSWORD + "\n",
        )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def _last_event_id(database: Database) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0))) or 0)


def _events_since(database: Database, event_id: int, *types: EventType) -> list[AuditEvent]:
    with database.session() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.id > event_id, AuditEvent.event_type.in_([str(t) for t in types]))
                .order_by(AuditEvent.id)
            )
        )


@pytest.mark.parametrize("cause", CAUSES)
def test_every_earlier_credential_of_the_user_dies_and_other_users_keep_theirs(
    dev_server: LiveServer,
    client: RegisteredClient,
    user: TestUser,
    server_db: Database,
    cause: str,
) -> None:
    bystander = create_user(dev_server.env["ECHO_DATABASE_URL"])
    held = hold_credentials(dev_server, client, user, user.password)
    kept = hold_credentials(dev_server, client, bystander, bystander.password)
    assert verify(dev_server, client, held.token["access_token"]).json()["active"] is True
    before = _last_event_id(server_db)

    outcome = _revoke(dev_server, user, cause)

    assert_dead(dev_server, client, held)
    assert_alive(dev_server, client, kept)
    if isinstance(outcome, dict):  # the CLI says what it ended
        assert outcome["revoked"] == {"sessions": 1, "token_families": 1, "authorization_codes": 1}
    pseudonym = pseudonyms.Pseudonyms.from_secret(
        settings_for(dev_server.env).secret_key_bytes()
    ).of(user.sub)
    recorded = _events_since(server_db, before, CAUSE_EVENTS[cause], EventType.CREDENTIALS_REVOKED)
    assert [(e.event_type, e.subject) for e in recorded] == [
        (str(CAUSE_EVENTS[cause]), pseudonym),
        (str(EventType.CREDENTIALS_REVOKED), pseudonym),
    ]
    assert recorded[1].details["token_families"] == 1


@pytest.mark.parametrize("cause", CAUSES)
def test_credentials_minted_right_after_the_change_work_and_nothing_old_comes_back(
    dev_server: LiveServer, client: RegisteredClient, user: TestUser, cause: str
) -> None:
    held = hold_credentials(dev_server, client, user, user.password)
    outcome = _revoke(dev_server, user, cause)
    if cause == "users disable":
        enabled = run_cli(dev_server.env, "users", "disable", "--enable", user.username)
        assert enabled.returncode == 0, enabled.stderr
    password = user.password if cause == "users disable" else NEW_PASSWORD

    # Within the same second as the change: no false refusal of anything minted after it.
    fresh = hold_credentials(dev_server, client, user, password)
    assert_alive(dev_server, client, fresh)
    if isinstance(outcome, Browser):  # the browser that changed the password stays usable
        party = RelyingParty(dev_server, client, SCOPE)
        try:
            token = party.fetch_token(party.authorize(outcome))
        finally:
            party.close()
        assert verify(dev_server, client, token["access_token"]).json()["active"] is True
    assert_dead(dev_server, client, held)  # re-enabling resurrects nothing


def test_own_password_change_keeps_this_browser_signed_in_under_a_new_cookie(
    dev_server: LiveServer, user: TestUser
) -> None:
    browser = Browser(dev_server)
    assert browser.login(user.username, user.password).status_code == 302
    old_cookie = browser.cookies[browser.session_cookie_name]
    response = browser.post_form(
        "/account/password",
        "/account/password",
        {
            "current_password": user.password,
            "new_password": NEW_PASSWORD,
            "new_password_confirmation": NEW_PASSWORD,
        },
    )
    assert response.status_code == 302, response.text
    assert browser.cookies[browser.session_cookie_name] != old_cookie
    assert "Your password was changed" in browser.get(response.headers["location"]).text
    assert browser.get("/account").status_code == 200
    assert not reaches_account(dev_server, old_cookie)
    assert Browser(dev_server).login(user.username, user.password).status_code == 401
    assert Browser(dev_server).login(user.username, NEW_PASSWORD).status_code == 302


def test_the_account_page_links_to_the_password_change(
    dev_server: LiveServer, user: TestUser
) -> None:
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    assert 'href="/account/password"' in browser.get("/account").text
    anonymous = Browser(dev_server).get("/account/password")
    assert anonymous.status_code == 302
    assert anonymous.headers["location"].startswith("/login?next=")


def test_a_wrong_current_password_is_a_400_that_changes_nothing_and_is_recorded(
    dev_server: LiveServer, client: RegisteredClient, user: TestUser, server_db: Database
) -> None:
    held = hold_credentials(dev_server, client, user, user.password)
    attacker = Browser(dev_server)  # e.g. someone at an unlocked, signed-in computer
    attacker.login(user.username, user.password)
    before = _last_event_id(server_db)

    response = attacker.post_form(
        "/account/password",
        "/account/password",
        {
            "current_password": "a-guess-" + user.password,
            "new_password": NEW_PASSWORD,
            "new_password_confirmation": NEW_PASSWORD,
        },
    )

    assert response.status_code == 400
    assert "current password is not correct" in response.text
    failures = _events_since(server_db, before, EventType.LOGIN_FAILURE, EventType.PASSWORD_CHANGED)
    assert [(e.event_type, e.details) for e in failures] == [
        (str(EventType.LOGIN_FAILURE), {"via": "password_change"})
    ]
    assert failures[0].subject is not None
    assert failures[0].subject.startswith("u_")
    assert_alive(dev_server, client, held)
    assert attacker.get("/account").status_code == 200
    assert Browser(dev_server).login(user.username, NEW_PASSWORD).status_code == 401
    assert Browser(dev_server).login(user.username, user.password).status_code == 302


@pytest.mark.parametrize(
    ("new_password", "confirmation", "message"),
    [
        (NEW_PASSWORD, NEW_PASSWORD + "x", "not the same"),
        ("short", "short", "Passwords must be 8 to 1024 characters long."),
        ("p" * 1025, "p" * 1025, "Passwords must be 8 to 1024 characters long."),
    ],
)
def test_an_unacceptable_new_password_is_a_400_that_changes_nothing(
    dev_server: LiveServer, user: TestUser, new_password: str, confirmation: str, message: str
) -> None:
    other = Browser(dev_server)
    other.login(user.username, user.password)
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    response = browser.post_form(
        "/account/password",
        "/account/password",
        {
            "current_password": user.password,
            "new_password": new_password,
            "new_password_confirmation": confirmation,
        },
    )
    assert response.status_code == 400
    assert message in response.text
    assert other.get("/account").status_code == 200
    assert Browser(dev_server).login(user.username, user.password).status_code == 302


def test_a_password_change_without_the_csrf_token_is_refused(
    dev_server: LiveServer, user: TestUser
) -> None:
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    response = browser.post(
        "/account/password",
        {
            "current_password": user.password,
            "new_password": NEW_PASSWORD,
            "new_password_confirmation": NEW_PASSWORD,
        },
    )
    assert response.status_code == 400
    assert "csrf_failed" in response.text
    assert Browser(dev_server).login(user.username, NEW_PASSWORD).status_code == 401
    assert browser.get("/account").status_code == 200


def test_an_access_token_of_a_disabled_user_is_inactive_even_if_its_family_is_not_revoked(
    dev_server: LiveServer, client: RegisteredClient, user: TestUser, server_db: Database
) -> None:
    """The per-request check itself (finding 3), not only the revocation done by disable."""
    held = hold_credentials(dev_server, client, user, user.password)
    with server_db.transaction() as session:
        session.execute(update(User).where(User.id == user.id).values(disabled=True))
    dev_server.advance(1.0)  # the app keeps a user's state for up to a second

    assert verify(dev_server, client, held.token["access_token"]).status_code == 401
    assert introspect(dev_server, client, held.token["access_token"]) == {"active": False}
    assert introspect(dev_server, client, held.token["refresh_token"]) == {"active": False}
    assert refresh(dev_server, client, held.token["refresh_token"]).json()["error"] == (
        "invalid_grant"
    )


def test_credentials_minted_before_the_users_not_before_die_even_if_not_revoked(
    dev_server: LiveServer, client: RegisteredClient, user: TestUser, server_db: Database
) -> None:
    """``users.tokens_not_before`` alone kills older families and codes (the per-request check
    that also covers a redemption racing the revocation)."""
    held = hold_credentials(dev_server, client, user, user.password)
    with server_db.transaction() as session:
        session.execute(update(User).where(User.id == user.id).values(tokens_not_before=utcnow()))
    dev_server.advance(1.0)  # the app keeps a user's state for up to a second

    assert_dead(dev_server, client, held)


@pytest.mark.parametrize("held_at", ["after_flush", "before_commit"])
def test_a_code_redemption_racing_a_revocation_waits_for_it_and_is_refused(
    dev_server: LiveServer, client: RegisteredClient, user: TestUser, held_at: str
) -> None:
    """The revocation is paused with the users row already updated (``after_flush``: before
    codes and families are touched; ``before_commit``: after). A redemption of a code issued
    before it must wait for the revocation's commit and then be refused, never mint a family
    that outlives it (nor fail with a 500 because the code row vanished under it)."""
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    party = RelyingParty(dev_server, client, SCOPE)
    location = party.authorize(browser)
    settings = settings_for(dev_server.env)
    database = Database(settings.database_url)
    services = build_services(settings, database)
    paused, resume = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def revoke() -> None:
        with database.session() as session:

            @event.listens_for(session, held_at)
            def pause(*_: Any) -> None:
                if not paused.is_set():
                    paused.set()
                    resume.wait(30)

            row = session.get(User, user.id)
            assert row is not None
            outcome["revoked"] = revoke_user_credentials(
                session,
                services.sessions,
                row,
                audit=services.audit,
                revokers=services.accounts.revokers,
                cause=EventType.PASSWORD_CHANGED,
                actor="cli",
            )

    def redeem_code() -> None:
        outcome["redeemed"] = redeem(party, location)

    revoker = threading.Thread(target=revoke)
    redeemer = threading.Thread(target=redeem_code)
    try:
        revoker.start()
        assert paused.wait(30)
        redeemer.start()
        redeemer.join(2.0)
        waited = redeemer.is_alive()
    finally:
        resume.set()
        revoker.join(30)
        redeemer.join(30)
        party.close()
        database.dispose()

    assert waited, f"the redemption did not wait for the revocation: {outcome.get('redeemed')}"
    redeemed: httpx.Response = outcome["redeemed"]
    assert redeemed.status_code == 400, redeemed.text
    assert redeemed.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("command", [("disable",), ("set-password",)])
def test_users_help_says_what_happens_to_sessions_and_tokens(
    dev_server: LiveServer, command: tuple[str, ...]
) -> None:
    result = run_cli(dev_server.env, "users", *command, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "browser session" in text
    assert "refresh-token family is revoked" in text
    assert "access tokens already issued" in text
