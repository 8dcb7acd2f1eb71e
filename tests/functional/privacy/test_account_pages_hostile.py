"""``/account/export`` and ``/account/delete`` refuse everything but the signed-in user's own
request with their current password, a CSRF token, each field once and (delete) their own
username typed: anonymous callers, wrong or missing passwords, missing CSRF, another user's
name or password, doubled fields and bytes that are not UTF-8 change and reveal nothing."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx
import pytest

from echo_identity.audit.events import EventType
from echo_identity.db import Database
from tests.factories import TestUser, create_user
from tests.functional.privacy.conftest import events_of, opened, pseudonym_of, rows_left
from tests.support.browser import Browser, csrf_token
from tests.support.server import LiveServer

PAGES = ["/account/export", "/account/delete"]


def _signed_in(server: LiveServer, user: TestUser) -> Browser:
    browser = Browser(server)
    assert browser.login(user.username, user.password).status_code == 302
    return browser


def _token(browser: Browser, page: str) -> str:
    return csrf_token(browser.get(page).text)


def _still_there(server: LiveServer, user: TestUser) -> bool:
    with opened(server) as database:
        return rows_left(database, user.id, user.sub).get("users") == 1


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert "content-disposition" not in response.headers
    assert "Traceback" not in response.text


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_callers_are_sent_to_sign_in_and_refused_without_csrf(
    dev_server: LiveServer, user: TestUser, page: str
) -> None:
    anonymous = Browser(dev_server)
    shown = anonymous.get(page)
    assert shown.status_code == 302
    assert shown.headers["location"].startswith("/login?next=")
    posted = anonymous.post(
        page, {"current_password": user.password, "confirm_username": user.username}
    )
    _refused(posted)
    assert _still_there(dev_server, user)


@pytest.mark.parametrize("page", PAGES)
def test_without_the_right_current_password_nothing_happens_and_it_counts_as_a_failed_sign_in(
    dev_server: LiveServer, user: TestUser, page: str, dev_db: Database
) -> None:
    browser = _signed_in(dev_server, user)
    via = page.rsplit("/", 1)[1]
    database = dev_db
    before = {e.id for e in events_of(database, str(EventType.LOGIN_FAILURE))}
    for form in ({}, {"current_password": ""}, {"current_password": user.password + "x"}):
        response = browser.post(
            page,
            {"csrf_token": _token(browser, page), "confirm_username": user.username, **form},
        )
        _refused(response)
        assert "Your current password is not correct" in response.text
    failures = [e for e in events_of(database, str(EventType.LOGIN_FAILURE)) if e.id not in before]
    assert [(e.subject, e.details) for e in failures] == [
        (pseudonym_of(dev_server, user.sub), {"via": via})
    ] * 3
    assert _still_there(dev_server, user)
    assert browser.get("/account").status_code == 200  # still signed in


@pytest.mark.parametrize("page", PAGES)
def test_a_post_without_its_csrf_token_is_refused(
    dev_server: LiveServer, user: TestUser, page: str
) -> None:
    browser = _signed_in(dev_server, user)
    for token in ({}, {"csrf_token": "forged"}):
        response = browser.post(
            page,
            {"current_password": user.password, "confirm_username": user.username, **token},
        )
        _refused(response)
    assert _still_there(dev_server, user)


@pytest.mark.parametrize("page", PAGES)
def test_a_doubled_field_is_refused(dev_server: LiveServer, user: TestUser, page: str) -> None:
    browser = _signed_in(dev_server, user)
    for doubled in ("current_password", "confirm_username"):
        pairs = [
            ("csrf_token", _token(browser, page)),
            ("current_password", user.password),
            ("confirm_username", user.username),
            (doubled, user.password if doubled == "current_password" else user.username),
        ]
        response = browser.post(
            page,
            content=urlencode(pairs),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        _refused(response)
        assert "repeated" in response.text
    assert _still_there(dev_server, user)


@pytest.mark.parametrize("page", PAGES)
def test_form_bytes_that_are_not_utf8_are_refused(
    dev_server: LiveServer, user: TestUser, page: str
) -> None:
    browser = _signed_in(dev_server, user)
    token = _token(browser, page)
    for hostile in (b"%ff%fe", b"%ed%a0%80", b"a%00b"):
        body = (
            f"csrf_token={token}&confirm_username={user.username}&current_password=".encode()
            + hostile
        )
        response = browser.post(
            page,
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 400, response.text
        assert "Traceback" not in response.text
    assert _still_there(dev_server, user)


def test_delete_needs_the_users_own_name_typed_exactly(
    dev_server: LiveServer, user: TestUser
) -> None:
    other = create_user(dev_server.env["ECHO_DATABASE_URL"])
    browser = _signed_in(dev_server, user)
    for typed in (
        {},
        {"confirm_username": ""},
        {"confirm_username": user.username.upper()},
        {"confirm_username": other.username},
        {"confirm_username": f" {user.username}"},
    ):
        response = browser.post(
            "/account/delete",
            {
                "csrf_token": _token(browser, "/account/delete"),
                "current_password": user.password,
                **typed,
            },
        )
        _refused(response)
        assert "Type your username exactly" in response.text
    assert _still_there(dev_server, user)
    assert _still_there(dev_server, other)


def test_one_users_session_cannot_export_or_delete_another_user(
    dev_server: LiveServer, user: TestUser
) -> None:
    other = create_user(dev_server.env["ECHO_DATABASE_URL"])
    browser = _signed_in(dev_server, user)
    # The other user's password, with either name: a wrong current password.
    for name in (other.username, user.username):
        response = browser.post(
            "/account/delete",
            {
                "csrf_token": _token(browser, "/account/delete"),
                "current_password": other.password,
                "confirm_username": name,
            },
        )
        _refused(response)
    # No field names a user: one naming the other user is ignored, the export is one's own.
    exported = browser.post(
        "/account/export",
        {
            "csrf_token": _token(browser, "/account/export"),
            "current_password": user.password,
            "sub": other.sub,
            "username": other.username,
        },
    )
    assert exported.status_code == 200, exported.text
    assert json.loads(exported.text)["profile"]["sub"] == user.sub
    assert other.sub not in exported.text
    assert other.username not in exported.text
    assert _still_there(dev_server, user)
    assert _still_there(dev_server, other)
