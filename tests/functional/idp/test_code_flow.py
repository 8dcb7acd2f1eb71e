"""The full authorization code + PKCE flow with Authlib's OAuth 2.0 client as the relying party."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.factories import TestUser
from tests.support.browser import Browser
from tests.support.oidc import LOGOUT_URI, RelyingParty, query_of, web_client
from tests.support.server import LiveServer


@pytest.fixture
def rp(dev_server: LiveServer) -> Iterator[RelyingParty]:
    party = RelyingParty(dev_server, web_client(dev_server), "openid profile email offline_access")
    yield party
    party.close()


def test_full_code_flow_with_pkce_id_token_userinfo_refresh_revoke_introspect_logout(
    dev_server: LiveServer, user: TestUser, rp: RelyingParty
) -> None:
    browser = Browser(dev_server)
    browser.login(user.username, user.password)

    location = rp.authorize(browser)
    params = query_of(location)
    assert location.startswith("http://127.0.0.1:9/callback?")
    assert params["state"] == rp.state
    assert params["iss"] == rp.metadata["issuer"]  # RFC 9207

    token = rp.fetch_token(location)
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 600
    claims = rp.validate_id_token(token)
    assert claims["sub"] == user.sub
    assert claims["nonce"] == rp.nonce
    assert claims["email"] == f"{user.username}@example.org"
    assert "at_hash" in claims
    assert claims["auth_time"] <= claims["iat"]

    userinfo = rp.oauth.get(rp.metadata["userinfo_endpoint"]).json()
    assert userinfo["sub"] == user.sub
    assert userinfo["preferred_username"] == user.username

    old_refresh = token["refresh_token"]
    refreshed = rp.oauth.refresh_token(rp.metadata["token_endpoint"], refresh_token=old_refresh)
    assert refreshed["refresh_token"] != old_refresh
    assert refreshed["access_token"] != token["access_token"]

    introspection = rp.oauth.introspect_token(
        rp.metadata["introspection_endpoint"], token=refreshed["access_token"]
    ).json()
    assert introspection["active"] is True
    assert introspection["sub"] == user.sub
    assert introspection["client_id"] == rp.client.client_id

    rp.oauth.revoke_token(rp.metadata["revocation_endpoint"], token=refreshed["access_token"])
    after = rp.oauth.introspect_token(
        rp.metadata["introspection_endpoint"], token=refreshed["access_token"]
    ).json()
    assert after == {"active": False}

    logout = browser.get(
        "/logout?"
        + httpx.QueryParams(
            id_token_hint=token["id_token"], post_logout_redirect_uri=LOGOUT_URI, state="bye-1"
        ).__str__()
    )
    assert logout.status_code == 302
    assert logout.headers["location"] == f"{LOGOUT_URI}?state=bye-1"
    assert browser.get("/account").status_code == 302  # the browser session is over
