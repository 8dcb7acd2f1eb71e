"""The authorization endpoint refuses bad requests safely (RFC 6749 §4.1.2.1, RFC 9700)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.factories import TestUser
from tests.support.browser import Browser
from tests.support.oidc import REDIRECT_URI, RelyingParty, hidden_fields, query_of, web_client
from tests.support.server import LiveServer, run_cli


@pytest.fixture
def rp(dev_server: LiveServer) -> Iterator[RelyingParty]:
    party = RelyingParty(dev_server, web_client(dev_server), "openid profile")
    yield party
    party.close()


@pytest.fixture
def browser(dev_server: LiveServer, user: TestUser) -> Browser:
    signed_in = Browser(dev_server)
    signed_in.login(user.username, user.password)
    return signed_in


def _path(rp: RelyingParty, **params: str) -> str:
    return rp.browser_path(rp.authorization_url(**params))


def test_unknown_client_is_refused_before_login_and_never_redirected(
    dev_server: LiveServer, rp: RelyingParty
) -> None:
    anonymous = Browser(dev_server)
    path = _path(rp).replace(rp.client.client_id, "no-such-client")
    response = anonymous.get(path)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "invalid_client" in response.text


def test_unregistered_redirect_uri_is_refused_before_login_and_never_redirected(
    dev_server: LiveServer, rp: RelyingParty
) -> None:
    evil = "https://evil.example/steal"
    rp.oauth.redirect_uri = evil
    response = Browser(dev_server).get(_path(rp))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "invalid_redirect_uri" in response.text
    assert evil not in response.headers.get("location", "")


def test_redirect_uri_must_match_exactly(dev_server: LiveServer, rp: RelyingParty) -> None:
    rp.oauth.redirect_uri = REDIRECT_URI + "/../callback"
    assert Browser(dev_server).get(_path(rp)).status_code == 400
    rp.oauth.redirect_uri = REDIRECT_URI + "?extra=1"
    assert Browser(dev_server).get(_path(rp)).status_code == 400


def test_anonymous_user_is_sent_to_login_and_back(
    dev_server: LiveServer, rp: RelyingParty, user: TestUser
) -> None:
    browser = Browser(dev_server)
    path = _path(rp)
    response = browser.get(path)
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login?next=%2Fauthorize")
    back = browser.login(user.username, user.password, next_url=path)
    assert back.headers["location"] == path


def test_missing_pkce_is_refused_with_a_redirected_error(
    rp: RelyingParty, browser: Browser
) -> None:
    url, _state = rp.oauth.create_authorization_url(rp.metadata["authorization_endpoint"])
    rp.oauth.code_challenge_method = None
    response = browser.get(rp.browser_path(url.replace("code_challenge", "x_ignored")))
    assert response.status_code == 302
    params = query_of(response.headers["location"])
    assert params["error"] == "invalid_request"
    assert "PKCE" in params["error_description"]
    assert params["iss"] == rp.metadata["issuer"]


def test_plain_pkce_is_refused(rp: RelyingParty, browser: Browser) -> None:
    path = _path(rp).replace("code_challenge_method=S256", "code_challenge_method=plain")
    response = browser.get(path)
    assert query_of(response.headers["location"])["error"] == "invalid_request"


def test_user_denying_consent_sends_access_denied_with_state_and_iss(
    rp: RelyingParty, browser: Browser
) -> None:
    page = browser.get(_path(rp))
    assert 'name="decision" value="allow"' in page.text
    assert 'name="decision" value="deny"' in page.text
    response = browser.post("/authorize", {**hidden_fields(page.text), "decision": "deny"})
    params = query_of(response.headers["location"])
    assert params["error"] == "access_denied"
    assert params["state"] == rp.state
    assert params["iss"] == rp.metadata["issuer"]


def test_consent_is_asked_once_then_remembered_unless_prompt_consent(
    rp: RelyingParty, browser: Browser
) -> None:
    first = rp.authorize(browser)
    assert "code" in query_of(first)
    rp.nonce = secrets.token_urlsafe(16)
    second = browser.get(_path(rp))
    assert second.status_code == 302  # no consent page the second time
    assert "code" in query_of(second.headers["location"])
    rp.nonce = secrets.token_urlsafe(16)
    forced = browser.get(_path(rp, prompt="consent"))
    assert forced.status_code == 200
    assert 'name="decision"' in forced.text


def test_prompt_none_without_a_session_returns_login_required(
    dev_server: LiveServer, rp: RelyingParty
) -> None:
    response = Browser(dev_server).get(_path(rp, prompt="none"))
    params = query_of(response.headers["location"])
    assert params["error"] == "login_required"
    assert params["state"] == rp.state


def test_prompt_none_without_consent_returns_consent_required(
    rp: RelyingParty, browser: Browser
) -> None:
    response = browser.get(_path(rp, prompt="none"))
    assert query_of(response.headers["location"])["error"] == "consent_required"


def test_prompt_login_makes_a_signed_in_user_authenticate_again(
    rp: RelyingParty, browser: Browser, user: TestUser
) -> None:
    response = browser.get(_path(rp, prompt="login"))
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login?next=")
    assert browser.get("/account").status_code == 302  # the old session is over


def test_disabled_client_is_refused_at_authorize(
    dev_server: LiveServer, rp: RelyingParty, browser: Browser
) -> None:
    assert run_cli(dev_server.env, "clients", "disable", rp.client.client_id).returncode == 0
    dev_server.advance(1.0)  # another process's change reaches every worker within a second
    response = browser.get(_path(rp))
    assert response.status_code == 400
    assert "location" not in response.headers


def test_a_nonce_seen_before_is_refused_as_a_replay(rp: RelyingParty, browser: Browser) -> None:
    assert "code" in query_of(rp.authorize(browser))
    replay = browser.get(_path(rp))  # same nonce again
    assert query_of(replay.headers["location"])["error"] == "invalid_request"
