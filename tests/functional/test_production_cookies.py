"""Production mode behind a TLS-terminating proxy: cookie flags, HSTS, logout."""

from __future__ import annotations

import pytest

from tests.factories import TestUser, create_user
from tests.support.browser import Browser
from tests.support.server import LiveServer


@pytest.fixture
def user(prod_server: LiveServer) -> TestUser:
    return create_user(prod_server.env["ECHO_DATABASE_URL"])


def _session_cookie_header(browser: Browser) -> str:
    (header,) = [h for h in browser.raw_set_cookies if h.startswith("__Host-echo_session=")][-1:]
    return header


def test_production_session_cookie_is_host_prefixed_secure_httponly_lax(
    prod_server: LiveServer, user: TestUser
) -> None:
    browser = Browser(prod_server, behind_tls_proxy=True)
    response = browser.login(user.username, user.password)
    assert response.status_code == 302
    header = _session_cookie_header(browser)
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert {"secure", "httponly", "samesite", "path"} <= attributes
    assert "samesite=lax" in header.lower()
    assert "domain" not in attributes  # the __Host- prefix forbids Domain
    assert "path=/" in header.lower()
    assert browser.get("/account").status_code == 200


def test_production_responses_carry_hsts(prod_server: LiveServer) -> None:
    response = Browser(prod_server, behind_tls_proxy=True).get("/login")
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")


def test_after_logout_the_old_production_cookie_no_longer_authenticates(
    prod_server: LiveServer, user: TestUser
) -> None:
    browser = Browser(prod_server, behind_tls_proxy=True)
    browser.login(user.username, user.password)
    stolen = browser.cookies["__Host-echo_session"]
    browser.post_form("/account", "/logout", {})
    assert "__Host-echo_session" not in browser.cookies
    replay = Browser(prod_server, behind_tls_proxy=True)
    replay.cookies["__Host-echo_session"] = stolen
    response = replay.get("/account")
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login")


def test_development_cookie_name_is_not_accepted_in_production(
    prod_server: LiveServer, user: TestUser
) -> None:
    browser = Browser(prod_server, behind_tls_proxy=True)
    browser.login(user.username, user.password)
    downgraded = Browser(prod_server, behind_tls_proxy=True)
    downgraded.cookies["echo_session"] = browser.cookies["__Host-echo_session"]
    assert downgraded.get("/account").status_code == 302
