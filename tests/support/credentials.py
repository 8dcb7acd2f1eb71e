"""What a signed-in user holds (a browser session, a token family, a pending code) and the
checks that each piece is alive or dead at every endpoint that honours it. For the tests of
credentials dying with their owner: disable, password change and reset (and later deletion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from tests.factories import TestUser
from tests.support.browser import Browser
from tests.support.oidc import RegisteredClient, RelyingParty, query_of
from tests.support.server import LiveServer

SCOPE = "openid profile offline_access"


@dataclass
class Held:
    """Everything a user holds before the change."""

    browser: Browser  # signed in
    cookie: str  # that browser's session cookie
    token: dict[str, Any]  # access + refresh token from the code flow
    pending: RelyingParty  # an authorization whose code was issued but not yet redeemed
    pending_location: str


def hold_credentials(
    server: LiveServer, client: RegisteredClient, user: TestUser, password: str
) -> Held:
    browser = Browser(server)
    assert browser.login(user.username, password).status_code == 302
    party = RelyingParty(server, client, SCOPE)
    try:
        token = party.fetch_token(party.authorize(browser))
    finally:
        party.close()
    pending = RelyingParty(server, client, SCOPE)
    location = pending.authorize(browser)
    return Held(browser, browser.cookies[browser.session_cookie_name], token, pending, location)


def verify(server: LiveServer, client: RegisteredClient, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/verify",
        data={"token": token},
        auth=(client.client_id, client.client_secret or ""),
    )


def introspect(server: LiveServer, client: RegisteredClient, token: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.base_url}/introspect",
        data={"token": token},
        auth=(client.client_id, client.client_secret or ""),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refresh(server: LiveServer, client: RegisteredClient, refresh_token: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(client.client_id, client.client_secret or ""),
    )


def redeem(party: RelyingParty, location: str) -> httpx.Response:
    return httpx.post(
        party.metadata["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": query_of(location)["code"],
            "redirect_uri": party.oauth.redirect_uri,
            "code_verifier": party.code_verifier,
        },
        auth=(party.client.client_id, party.client.client_secret or ""),
        timeout=30,
    )


def userinfo(server: LiveServer, access_token: str) -> httpx.Response:
    return httpx.get(
        f"{server.base_url}/userinfo", headers={"Authorization": f"Bearer {access_token}"}
    )


def reaches_account(server: LiveServer, cookie: str) -> bool:
    browser = Browser(server)
    browser.cookies[browser.session_cookie_name] = cookie
    return browser.get("/account").status_code == 200


def assert_dead(server: LiveServer, client: RegisteredClient, held: Held) -> None:
    access, refresh_token = held.token["access_token"], held.token["refresh_token"]
    verified = verify(server, client, access)
    assert verified.status_code == 401, verified.text
    assert verified.json()["active"] is False
    assert verified.json()["error"] == "token_revoked"
    assert introspect(server, client, access) == {"active": False}
    assert introspect(server, client, refresh_token) == {"active": False}
    refreshed = refresh(server, client, refresh_token)
    assert refreshed.status_code == 400, refreshed.text
    assert refreshed.json()["error"] == "invalid_grant"
    assert userinfo(server, access).status_code == 401
    redeemed = redeem(held.pending, held.pending_location)
    assert redeemed.status_code == 400, redeemed.text
    assert redeemed.json()["error"] == "invalid_grant"
    assert not reaches_account(server, held.cookie)


def assert_alive(server: LiveServer, client: RegisteredClient, held: Held) -> None:
    access = held.token["access_token"]
    assert verify(server, client, access).json()["active"] is True
    assert introspect(server, client, access)["active"] is True
    assert introspect(server, client, held.token["refresh_token"])["active"] is True
    assert userinfo(server, access).status_code == 200
    assert reaches_account(server, held.cookie)
    assert refresh(server, client, held.token["refresh_token"]).status_code == 200
    assert redeem(held.pending, held.pending_location).status_code == 200
