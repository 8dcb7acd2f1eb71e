"""The account-takeover commands of the incident runbook: ``users end-sessions`` ends every
browser session of a user (their applications' tokens keep working), ``users revoke-grants``
revokes every code and token family (their browser sessions keep working); both recorded."""

from __future__ import annotations

import json

import pytest

from echo_identity.audit.events import EventType
from tests.factories import TestUser, create_user
from tests.functional.privacy.conftest import events_of, opened, pseudonym_of
from tests.support.browser import Browser
from tests.support.credentials import (
    hold_credentials,
    introspect,
    reaches_account,
    redeem,
    refresh,
    userinfo,
    verify,
)
from tests.support.oidc import RegisteredClient, web_client
from tests.support.server import LiveServer, run_cli


@pytest.fixture(scope="module")
def client(dev_server: LiveServer) -> RegisteredClient:
    return web_client(dev_server)


def _recorded(server: LiveServer, event_type: EventType, user: TestUser) -> list[dict[str, object]]:
    pseudonym = pseudonym_of(server, user.sub)
    with opened(server) as database:
        return [
            {"actor": e.actor, "details": e.details}
            for e in events_of(database, str(event_type))
            if e.subject == pseudonym
        ]


def test_end_sessions_signs_every_browser_out_and_leaves_tokens_alone(
    dev_server: LiveServer, client: RegisteredClient, user: TestUser
) -> None:
    bystander = create_user(dev_server.env["ECHO_DATABASE_URL"])
    held = hold_credentials(dev_server, client, user, user.password)
    second = Browser(dev_server)
    assert second.login(user.username, user.password).status_code == 302
    kept = Browser(dev_server)
    assert kept.login(bystander.username, bystander.password).status_code == 302

    result = run_cli(dev_server.env, "users", "end-sessions", user.username, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"sub": user.sub, "sessions": 2}
    assert not reaches_account(dev_server, held.cookie)
    assert second.get("/account").status_code == 302
    assert kept.get("/account").status_code == 200
    assert verify(dev_server, client, held.token["access_token"]).json()["active"] is True
    assert _recorded(dev_server, EventType.SESSIONS_ENDED, user) == [
        {"actor": "cli", "details": {"sessions": 2}}
    ]


def test_revoke_grants_kills_every_token_and_code_and_leaves_the_browser_signed_in(
    dev_server: LiveServer, client: RegisteredClient, user: TestUser
) -> None:
    bystander = create_user(dev_server.env["ECHO_DATABASE_URL"])
    held = hold_credentials(dev_server, client, user, user.password)
    kept = hold_credentials(dev_server, client, bystander, bystander.password)

    result = run_cli(dev_server.env, "users", "revoke-grants", user.sub, "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "sub": user.sub,
        "token_families": 1,
        "authorization_codes": 1,
    }
    access, refresh_token = held.token["access_token"], held.token["refresh_token"]
    assert verify(dev_server, client, access).json()["active"] is False
    assert introspect(dev_server, client, access) == {"active": False}
    assert introspect(dev_server, client, refresh_token) == {"active": False}
    assert refresh(dev_server, client, refresh_token).json()["error"] == "invalid_grant"
    assert userinfo(dev_server, access).status_code == 401
    assert redeem(held.pending, held.pending_location).json()["error"] == "invalid_grant"
    assert reaches_account(dev_server, held.cookie)
    assert verify(dev_server, client, kept.token["access_token"]).json()["active"] is True
    assert _recorded(dev_server, EventType.GRANTS_REVOKED, user) == [
        {"actor": "cli", "details": {"token_families": 1, "authorization_codes": 1}}
    ]


@pytest.mark.parametrize("command", ["end-sessions", "revoke-grants"])
def test_an_unknown_user_exits_1_with_a_clear_message(dev_server: LiveServer, command: str) -> None:
    result = run_cli(dev_server.env, "users", command, "nobody-here")
    assert result.returncode == 1
    assert "No user has that subject or username" in result.stderr
    as_json = run_cli(dev_server.env, "users", command, "nobody-here", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["error"] == "unknown_user"
