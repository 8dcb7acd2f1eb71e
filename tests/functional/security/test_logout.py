"""RP-Initiated Logout 1.0 without logout CSRF (issue 10, finding 2).

Only an ID token we issued whose ``sub`` is the signed-in user ends the session on a GET; any
other link shows a confirmation page whose CSRF-protected POST ends the session. A
``post_logout_redirect_uri`` is followed only when registered for a validly hinted client.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database
from tests.factories import TestUser, create_user
from tests.support.browser import Browser, csrf_token
from tests.support.oidc import (
    LOGOUT_URI,
    RelyingParty,
    hidden_fields,
    register_client,
    sign_as_server,
    web_client,
)
from tests.support.server import LiveServer

OTHER_LOGOUT_URI = "http://127.0.0.1:9/elsewhere"


@dataclass
class SignedIn:
    """A user signed in in their own browser, with the tokens the RP got for them."""

    user: TestUser
    browser: Browser
    token: dict[str, Any]

    @property
    def id_token(self) -> str:
        return str(self.token["id_token"])

    def is_signed_in(self) -> bool:
        return self.browser.get("/account").status_code == 200


@pytest.fixture(scope="module")
def rp(dev_server: LiveServer) -> Iterator[RelyingParty]:
    party = RelyingParty(dev_server, web_client(dev_server), "openid profile")
    yield party
    party.close()


def _sign_in(server: LiveServer, rp: RelyingParty) -> SignedIn:
    user = create_user(server.env["ECHO_DATABASE_URL"])
    browser = Browser(server)
    browser.login(user.username, user.password)
    rp.nonce, rp.code_verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(48)  # no replay
    location = rp.authorize(browser)
    assert "code=" in location, location
    token = rp.fetch_token(location)
    return SignedIn(user, browser, token)


@pytest.fixture
def alice(dev_server: LiveServer, rp: RelyingParty) -> SignedIn:
    return _sign_in(dev_server, rp)


@pytest.fixture
def bob(dev_server: LiveServer, rp: RelyingParty) -> SignedIn:
    return _sign_in(dev_server, rp)


def _logout_link(**params: str) -> str:
    return "/logout?" + str(httpx.QueryParams(params))


def _assert_confirmation_page(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert "location" not in response.headers
    assert 'action="/logout"' in response.text


def _id_token_claims(server: LiveServer, user: TestUser, client_id: str, **extra: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": server.env["ECHO_ISSUER"],
        "sub": user.sub,
        "aud": client_id,
        "azp": client_id,
        "iat": now,
        "exp": now + 300,
        **extra,
    }
    return sign_as_server(server, claims, header={"typ": "JWT"})


# -- links that must not end the session ---------------------------------------------------------


def test_bobs_id_token_as_hint_does_not_end_alices_session(alice: SignedIn, bob: SignedIn) -> None:
    link = _logout_link(
        id_token_hint=bob.id_token, post_logout_redirect_uri=LOGOUT_URI, state="s-1"
    )
    _assert_confirmation_page(alice.browser.get(link))
    assert alice.is_signed_in()
    assert bob.is_signed_in()


def test_alices_own_access_token_as_hint_does_not_end_her_session(alice: SignedIn) -> None:
    link = _logout_link(
        id_token_hint=alice.token["access_token"], post_logout_redirect_uri=LOGOUT_URI
    )
    _assert_confirmation_page(alice.browser.get(link))
    assert alice.is_signed_in()


def _forged_hints(server: LiveServer, alice: SignedIn, client_id: str) -> dict[str, str]:
    header, payload, signature = alice.id_token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "bad signature": ".".join([header, payload, flipped]),
        "garbage": "not-a-token",
        "unsigned": f"{header}.{payload}.",
        "another issuer": _id_token_claims(
            server, alice.user, client_id, iss="https://evil.example"
        ),
    }


@pytest.mark.parametrize("case", ["bad signature", "garbage", "unsigned", "another issuer"])
def test_a_forged_or_garbled_hint_does_not_end_the_session(
    dev_server: LiveServer, rp: RelyingParty, alice: SignedIn, case: str
) -> None:
    hint = _forged_hints(dev_server, alice, rp.client.client_id)[case]
    link = _logout_link(id_token_hint=hint, post_logout_redirect_uri=LOGOUT_URI, state="s")
    _assert_confirmation_page(alice.browser.get(link))
    assert alice.is_signed_in()


def test_a_nul_byte_in_the_logout_parameters_ends_no_session_and_is_no_500(
    alice: SignedIn, rp: RelyingParty
) -> None:
    for params in (
        {"id_token_hint": alice.id_token + "\x00"},
        {"id_token_hint": alice.id_token, "client_id": rp.client.client_id + "\x00"},
    ):
        response = alice.browser.get(_logout_link(**params, post_logout_redirect_uri=LOGOUT_URI))
        assert response.status_code in {200, 400}  # 400: the input-hygiene layer saw it first
        assert "location" not in response.headers
        assert alice.is_signed_in()


def test_a_link_without_hint_does_not_end_the_session(alice: SignedIn) -> None:
    _assert_confirmation_page(alice.browser.get("/logout"))
    _assert_confirmation_page(alice.browser.get(_logout_link(post_logout_redirect_uri=LOGOUT_URI)))
    assert alice.is_signed_in()


def test_a_hint_with_a_client_id_that_is_not_its_audience_is_not_trusted(
    dev_server: LiveServer, alice: SignedIn
) -> None:
    other = web_client(dev_server, "--post-logout-redirect-uri", OTHER_LOGOUT_URI)
    link = _logout_link(
        id_token_hint=alice.id_token,
        client_id=other.client_id,
        post_logout_redirect_uri=OTHER_LOGOUT_URI,
    )
    _assert_confirmation_page(alice.browser.get(link))
    assert alice.is_signed_in()


def test_a_hint_while_nobody_is_signed_in_ends_no_session(
    dev_server: LiveServer, alice: SignedIn
) -> None:
    stranger = Browser(dev_server)
    response = stranger.get(_logout_link(id_token_hint=alice.id_token))
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "not signed in" in response.text
    assert alice.is_signed_in()


# -- the user's own ID token ---------------------------------------------------------------------


def _logouts(server: LiveServer, client_id: str) -> list[AuditEvent]:
    database = Database(server.env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            return list(
                session.scalars(
                    select(AuditEvent).where(
                        AuditEvent.event_type == "auth.logout", AuditEvent.client_id == client_id
                    )
                )
            )
    finally:
        database.dispose()


def test_alices_own_id_token_ends_her_session_and_returns_to_the_rp_with_state(
    dev_server: LiveServer, rp: RelyingParty, alice: SignedIn
) -> None:
    before = len(_logouts(dev_server, rp.client.client_id))
    link = _logout_link(
        id_token_hint=alice.id_token, post_logout_redirect_uri=LOGOUT_URI, state="bye-2"
    )
    response = alice.browser.get(link)
    assert response.status_code == 302
    assert response.headers["location"] == f"{LOGOUT_URI}?state=bye-2"
    assert not alice.is_signed_in()
    assert len(_logouts(dev_server, rp.client.client_id)) == before + 1


def test_an_expired_id_token_of_the_signed_in_user_is_still_a_valid_hint(
    dev_server: LiveServer, rp: RelyingParty, alice: SignedIn
) -> None:
    now = int(time.time())
    expired = _id_token_claims(
        dev_server, alice.user, rp.client.client_id, iat=now - 7200, exp=now - 3600
    )
    response = alice.browser.get(
        _logout_link(id_token_hint=expired, post_logout_redirect_uri=LOGOUT_URI)
    )
    assert response.status_code == 302
    assert response.headers["location"] == LOGOUT_URI
    assert not alice.is_signed_in()


def test_an_unregistered_post_logout_redirect_uri_is_never_followed(alice: SignedIn) -> None:
    response = alice.browser.get(
        _logout_link(
            id_token_hint=alice.id_token,
            post_logout_redirect_uri="https://evil.example/",
            state="x",
        )
    )
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "evil.example" not in response.text
    assert not alice.is_signed_in()  # her own hint: signed out, just not sent anywhere


def test_a_uri_registered_for_another_client_is_not_followed(
    dev_server: LiveServer, alice: SignedIn
) -> None:
    register_client(
        dev_server,
        "--name",
        "Other RP",
        "--redirect-uri",
        "http://127.0.0.1:9/cb",
        "--post-logout-redirect-uri",
        OTHER_LOGOUT_URI,
    )
    response = alice.browser.get(
        _logout_link(id_token_hint=alice.id_token, post_logout_redirect_uri=OTHER_LOGOUT_URI)
    )
    assert response.status_code == 200
    assert "location" not in response.headers


# -- the confirmation form -----------------------------------------------------------------------


def test_the_confirmation_post_without_csrf_token_is_refused(
    alice: SignedIn, bob: SignedIn
) -> None:
    page = alice.browser.get(_logout_link(id_token_hint=bob.id_token))
    _assert_confirmation_page(page)
    refused = alice.browser.post("/logout", {})
    assert refused.status_code == 400
    assert "csrf_failed" in refused.text
    forged = alice.browser.post("/logout", {"csrf_token": "forged-" + csrf_token(page.text)})
    assert forged.status_code == 400
    assert alice.is_signed_in()


def test_confirming_ends_the_session_and_returns_to_the_hinted_clients_uri(
    alice: SignedIn, bob: SignedIn
) -> None:
    page = alice.browser.get(
        _logout_link(id_token_hint=bob.id_token, post_logout_redirect_uri=LOGOUT_URI, state="s-9")
    )
    _assert_confirmation_page(page)
    response = alice.browser.post("/logout", hidden_fields(page.text))
    assert response.status_code == 302
    assert response.headers["location"] == f"{LOGOUT_URI}?state=s-9"
    assert not alice.is_signed_in()
    assert bob.is_signed_in()


def test_a_tampered_confirmation_form_does_not_redirect_without_a_valid_hint(
    alice: SignedIn,
) -> None:
    page = alice.browser.get("/logout")
    response = alice.browser.post(
        "/logout",
        {
            "csrf_token": csrf_token(page.text),
            "id_token_hint": alice.token["access_token"],
            "post_logout_redirect_uri": LOGOUT_URI,
        },
    )
    assert response.status_code == 302
    assert response.headers["location"] == "/login"
    assert not alice.is_signed_in()
