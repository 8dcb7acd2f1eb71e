"""GDPR erasure (issue 13, point 2): ``/account/delete`` and ``users delete`` revoke the
user's vault tokens at the provider, kill every Echo credential, destroy the user's data key,
delete every row that names them and forget their pseudonym; the audit trail still verifies
and says ``privacy.user.erased`` under the pseudonym alone."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import update

from echo_identity.audit.events import EventType
from echo_identity.db import Database
from echo_identity.vault.models import Provider
from tests.factories import TestUser, create_user
from tests.functional.privacy.conftest import (
    delete_page,
    events_of,
    pseudonym_of,
    rows_left,
    stored_text,
)
from tests.support.browser import Browser
from tests.support.credentials import Held, assert_alive, assert_dead, hold_credentials
from tests.support.oidc import RegisteredClient, web_client
from tests.support.server import LiveServer, run_cli
from tests.support.vault import (
    Upstream,
    fetch_vault_token,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)


@dataclass
class Holdings:
    """A user with everything: a vault connection (and the upstream token a service fetched
    through it), a consented client's tokens and a pending code, signed-in browsers."""

    user: TestUser
    browser: Browser
    upstream_token: str
    service_bearer: str
    client: RegisteredClient
    held: Held


def give_everything(server: LiveServer, upstream: Upstream) -> Holdings:
    user = create_user(server.env["ECHO_DATABASE_URL"])
    service = vault_service_client(server, upstream.name)  # before the user consents
    browser, _ = run_connect_flow(server, upstream, user)
    bearer = vault_api_token(server, service)
    fetched = fetch_vault_token(server, bearer, user.sub, upstream.name)
    assert fetched.status_code == 200, fetched.text
    client = web_client(server)
    held = hold_credentials(server, client, user, user.password)
    return Holdings(user, browser, fetched.json()["access_token"], bearer, client, held)


def assert_erased(
    server: LiveServer, database: Database, upstream: Upstream, holdings: Holdings
) -> None:
    """Nothing of the user is left and nothing they held works; the trail verifies."""
    user = holdings.user
    assert rows_left(database, user.id, user.sub) == {}
    assert upstream.introspect(holdings.upstream_token) == {"active": False}
    assert_dead(server, holdings.client, holdings.held)
    gone = fetch_vault_token(server, holdings.service_bearer, user.sub, upstream.name)
    assert gone.status_code in (403, 404), gone.text
    pseudonym = pseudonym_of(server, user.sub)
    (erased,) = [
        e for e in events_of(database, str(EventType.USER_ERASED)) if e.subject == pseudonym
    ]
    assert user.sub not in json.dumps(erased.details)
    for table in ("audit_events", "audit_pseudonyms", "application_logs"):
        stored = stored_text(database, table)
        assert user.sub not in stored
        assert user.username not in stored
    sealed = run_cli({**server.env, "ECHO_AUDIT_SEAL_GRACE": "0"}, "worker", "--once", "--json")
    assert sealed.returncode == 0, sealed.stderr
    verified = run_cli(server.env, "audit", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["intact"] is True


def test_deleting_the_account_from_its_page_erases_everything_and_signs_out(
    privacy_server: LiveServer, privacy_db: Database, privacy_upstream: Upstream
) -> None:
    holdings = give_everything(privacy_server, privacy_upstream)
    bystander = give_everything(privacy_server, privacy_upstream)
    user = holdings.user

    response = delete_page(holdings.browser, user.password, user.username)

    assert response.status_code == 200, response.text
    assert "Your account has been deleted" in response.text
    assert holdings.browser.session_cookie_name not in holdings.browser.cookies
    assert holdings.browser.get("/account").status_code == 302  # to /login
    assert Browser(privacy_server).login(user.username, user.password).status_code == 401
    assert_erased(privacy_server, privacy_db, privacy_upstream, holdings)
    # The other user keeps everything.
    assert_alive(privacy_server, bystander.client, bystander.held)
    assert privacy_upstream.introspect(bystander.upstream_token)["active"] is True
    pseudonym = pseudonym_of(privacy_server, user.sub)
    steps = [
        e.event_type
        for e in events_of(
            privacy_db,
            str(EventType.ERASURE_STARTED),
            str(EventType.VAULT_CONNECTION_REVOKED),
            str(EventType.ERASURE_SIGNED_OUT),
            str(EventType.CREDENTIALS_REVOKED),
            str(EventType.PSEUDONYM_FORGOTTEN),
            str(EventType.USER_ERASED),
        )
        if e.subject == pseudonym
    ]
    assert steps == [
        EventType.ERASURE_STARTED,
        EventType.VAULT_CONNECTION_REVOKED,
        EventType.ERASURE_SIGNED_OUT,
        EventType.CREDENTIALS_REVOKED,
        EventType.PSEUDONYM_FORGOTTEN,
        EventType.USER_ERASED,
    ]


def test_users_delete_erases_by_name_and_a_second_run_says_it_is_done(
    privacy_server: LiveServer, privacy_db: Database, privacy_upstream: Upstream
) -> None:
    holdings = give_everything(privacy_server, privacy_upstream)
    user = holdings.user

    result = run_cli(privacy_server.env, "users", "delete", user.username, "--yes", "--json")

    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["sub"] == user.sub
    assert output["pseudonym"] == pseudonym_of(privacy_server, user.sub)
    assert output["upstream_failures"] == 0
    assert all(output["steps"].values())
    assert_erased(privacy_server, privacy_db, privacy_upstream, holdings)
    again = run_cli(privacy_server.env, "users", "delete", user.sub, "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["already_erased"] is True
    assert user.sub not in stored_text(privacy_db, "privacy_erasures")  # only while unfinished
    assert output["pseudonym"] in stored_text(privacy_db, "privacy_erasures")
    erased = [
        e
        for e in events_of(privacy_db, str(EventType.USER_ERASED))
        if e.subject == output["pseudonym"]
    ]
    assert len(erased) == 1
    assert erased[0].actor == "cli"


def test_users_delete_asks_first_and_a_no_erases_nothing(
    privacy_server: LiveServer, privacy_db: Database
) -> None:
    user = create_user(privacy_server.env["ECHO_DATABASE_URL"])
    for answer in ("n\n", "\n"):
        result = run_cli(privacy_server.env, "users", "delete", user.username, stdin=answer)
        assert result.returncode == 1
        assert f"Erase user {user.username}" in result.stderr
        assert "aborted: nothing was erased" in result.stderr
    assert rows_left(privacy_db, user.id, user.sub) == {"users": 1}
    assert Browser(privacy_server).login(user.username, user.password).status_code == 302
    result = run_cli(privacy_server.env, "users", "delete", user.username, stdin="y\n")
    assert result.returncode == 0, result.stderr
    assert f"erased user {user.sub}" in result.stdout
    assert rows_left(privacy_db, user.id, user.sub) == {}


def test_users_delete_of_an_unknown_user_exits_1_with_a_clear_message(
    privacy_server: LiveServer,
) -> None:
    for who in ("nobody-here", "00000000-0000-0000-0000-000000000000"):
        result = run_cli(privacy_server.env, "users", "delete", who, "--yes")
        assert result.returncode == 1
        assert "No user has that subject or username" in result.stderr
        as_json = run_cli(privacy_server.env, "users", "delete", who, "--yes", "--json")
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout)["error"] == "unknown_user"


def test_a_provider_that_fails_to_revoke_is_recorded_and_the_erasure_goes_on(
    privacy_server: LiveServer, privacy_db: Database, privacy_upstream: Upstream
) -> None:
    holdings = give_everything(privacy_server, privacy_upstream)
    broken = f"{privacy_upstream.server.base_url}/no-revocation-here"
    with privacy_db.transaction() as session:
        session.execute(
            update(Provider)
            .where(Provider.name == privacy_upstream.name)
            .values(revocation_url=broken)
        )

    result = run_cli(privacy_server.env, "users", "delete", holdings.user.sub, "--yes", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["upstream_failures"] == 1
    user = holdings.user
    assert rows_left(privacy_db, user.id, user.sub) == {}
    pseudonym = pseudonym_of(privacy_server, user.sub)
    (failed,) = [
        e
        for e in events_of(privacy_db, str(EventType.ERASURE_UPSTREAM_FAILED))
        if e.subject == pseudonym
    ]
    assert failed.details == {"provider": privacy_upstream.name, "error": "upstream_error"}
    (erased,) = [
        e for e in events_of(privacy_db, str(EventType.USER_ERASED)) if e.subject == pseudonym
    ]
    assert erased.details["upstream_failures"] == 1
    assert_dead(privacy_server, holdings.client, holdings.held)
