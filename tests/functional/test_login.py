"""Login, logout and account sessions against a real server and database."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database
from tests.factories import TestUser, create_user
from tests.support.browser import Browser
from tests.support.environment import stored_sessions
from tests.support.server import LiveServer, run_cli
from tests.support.write_lock import write_user_row_now


@pytest.fixture
def browser(dev_server: LiveServer) -> Browser:
    return Browser(dev_server)


def test_login_form_has_named_inputs_and_csrf_token(browser: Browser) -> None:
    page = browser.get("/login")
    assert page.status_code == 200
    for fragment in ('name="username"', 'name="password"', 'name="csrf_token"'):
        assert fragment in page.text


def test_login_with_correct_password_opens_the_account_page(
    browser: Browser, user: TestUser
) -> None:
    response = browser.login(user.username, user.password)
    assert response.status_code == 302
    assert response.headers["location"] == "/account"
    account = browser.get("/account")
    assert account.status_code == 200
    assert user.sub in account.text


def test_anonymous_visitor_is_sent_to_login_and_returned(browser: Browser, user: TestUser) -> None:
    response = browser.get("/account/sessions")
    assert response.status_code == 302
    assert response.headers["location"] == "/login?next=%2Faccount%2Fsessions"
    login = browser.login(user.username, user.password, next_url="/account/sessions")
    assert login.headers["location"] == "/account/sessions"


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x"]
)
def test_login_never_redirects_off_site(browser: Browser, user: TestUser, target: str) -> None:
    response = browser.login(user.username, user.password, next_url=target)
    assert response.headers["location"] == "/account"


def test_failed_login_does_not_reveal_whether_the_user_exists(
    browser: Browser, user: TestUser
) -> None:
    wrong_password = browser.login(user.username, "not-the-password")
    unknown_user = Browser(browser.server).login("nobody-" + user.username, "not-the-password")
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert "Invalid username or password." in wrong_password.text
    assert "Invalid username or password." in unknown_user.text
    assert browser.get("/account").status_code == 302


def test_login_without_csrf_token_is_refused(browser: Browser, user: TestUser) -> None:
    browser.get("/login")
    response = browser.post("/login", {"username": user.username, "password": user.password})
    assert response.status_code == 400
    assert "csrf_failed" in response.text
    assert browser.get("/account").status_code == 302


def test_login_rotates_the_session_id(browser: Browser, user: TestUser) -> None:
    # An attacker fixes a session id in the victim's browser; a visitor has no stored
    # session before signing in, only the signed anonymous cookie (CSRF secret).
    planted = "planted-" + secrets.token_urlsafe(16)
    browser.cookies["echo_session"] = planted
    browser.get("/login")
    anonymous = browser.cookies["echo_anon"]
    browser.login(user.username, user.password)
    assert browser.cookies["echo_session"] != planted
    assert "echo_anon" not in browser.cookies
    for name, value in (("echo_session", planted), ("echo_anon", anonymous)):
        fixated = Browser(browser.server)
        fixated.cookies[name] = value
        assert fixated.get("/account").status_code == 302, name


def test_logout_ends_the_server_side_session(browser: Browser, user: TestUser) -> None:
    browser.login(user.username, user.password)
    old_cookie = browser.cookies["echo_session"]
    response = browser.post_form("/account", "/logout", {})
    assert response.status_code == 302
    assert "echo_session" not in browser.cookies
    replay = Browser(browser.server)
    replay.cookies["echo_session"] = old_cookie
    assert replay.get("/account").status_code == 302


def test_user_lists_and_ends_their_other_sessions(dev_server: LiveServer, user: TestUser) -> None:
    laptop, phone = Browser(dev_server), Browser(dev_server)
    laptop.login(user.username, user.password)
    phone.login(user.username, user.password)
    listing = laptop.get("/account/sessions")
    assert listing.text.count('name="end"') == 2

    sids = {record.sid for record in stored_sessions(dev_server.env, user.id)}
    (phone_sid,) = sids - {laptop.session_digest()}
    ended = laptop.post_form("/account/sessions", f"/account/sessions/{phone_sid}/end", {})
    assert ended.headers["location"] == "/account/sessions"
    assert phone.get("/account").status_code == 302
    assert laptop.get("/account").status_code == 200


def test_a_user_cannot_end_someone_elses_session(dev_server: LiveServer) -> None:
    alice, bob = (
        create_user(dev_server.env["ECHO_DATABASE_URL"]),
        create_user(dev_server.env["ECHO_DATABASE_URL"]),
    )
    alice_browser, bob_browser = Browser(dev_server), Browser(dev_server)
    alice_browser.login(alice.username, alice.password)
    bob_browser.login(bob.username, bob.password)
    response = alice_browser.post_form(
        "/account/sessions", f"/account/sessions/{bob_browser.session_digest()}/end", {}
    )
    assert response.status_code == 404
    assert bob_browser.get("/account").status_code == 200


def test_disabled_user_loses_their_session(dev_server: LiveServer, user: TestUser) -> None:
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    assert run_cli(dev_server.env, "users", "disable", user.username).returncode == 0
    assert browser.get("/account").status_code == 302
    assert Browser(dev_server).login(user.username, user.password).status_code == 401


def test_a_name_typed_at_sign_in_reaches_the_audit_trail_only_as_a_keyed_digest(
    browser: Browser, user: TestUser
) -> None:
    typed_password = "Corr3ct-Horse-" + user.password  # typed into the name field by mistake
    database = Database(browser.server.env["ECHO_DATABASE_URL"])
    with database.session() as session:  # the server is shared: look only at this test's events
        before = session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0)))
    for _ in range(2):
        assert Browser(browser.server).login(typed_password, "x").status_code == 401
    assert browser.login(user.username, "not-the-password").status_code == 401

    try:
        with database.session() as session:
            failures = list(
                session.scalars(
                    select(AuditEvent)
                    .where(
                        AuditEvent.event_type == str(EventType.LOGIN_FAILURE),
                        AuditEvent.id > before,
                    )
                    .order_by(AuditEvent.id)
                )
            )
    finally:
        database.dispose()
    stored = repr([(e.subject, e.actor, e.details) for e in failures])
    assert typed_password.casefold() not in stored.casefold()
    assert user.username not in stored
    assert user.sub not in stored
    unknown_first, unknown_second, known = failures
    assert unknown_first.details["typed_name"] == unknown_second.details["typed_name"]
    assert unknown_first.details["typed_name"].startswith("n_")
    assert known.subject is not None
    assert known.subject.startswith("u_")
    assert "typed_name" not in known.details


def _password_hash(env: dict[str, str], user_id: int) -> str:
    database = Database(env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            user = session.get(User, user_id)
            assert user is not None
            return user.password_hash
    finally:
        database.dispose()


def _during_first_verify(
    monkeypatch: pytest.MonkeyPatch, password_hash: str, action: Callable[[], None]
) -> list[str]:
    """Run ``action`` inside the server's first argon2 check of ``password_hash`` (what another
    connection does while a sign-in hashes); the hashes the server checked, in order."""
    checked: list[str] = []
    verify = PasswordHasher.verify

    def hooked(self: PasswordHasher, hash_: str, password: str) -> bool:
        checked.append(hash_)
        if hash_ == password_hash and checked.count(hash_) == 1:
            action()
        return verify(self, hash_, password)

    monkeypatch.setattr(PasswordHasher, "verify", hooked)
    return checked


def test_sign_in_lets_other_connections_write_while_argon2_runs(
    browser: Browser, user: TestUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = browser.server.env
    refusals: list[str | None] = []
    _during_first_verify(
        monkeypatch,
        _password_hash(env, user.id),
        lambda: refusals.append(write_user_row_now(env["ECHO_DATABASE_URL"], user.id)),
    )

    response = browser.login(user.username, user.password)

    assert response.status_code == 302
    assert refusals == [None]  # the lock was free at once: no busy wait, no 503 under load


@pytest.mark.parametrize(
    "change",
    [("users", "set-password", "--password-stdin"), ("users", "disable")],
    ids=["password-reset", "disabled"],
)
def test_sign_in_checked_before_a_concurrent_change_starts_no_session(
    dev_server: LiveServer,
    user: TestUser,
    monkeypatch: pytest.MonkeyPatch,
    change: tuple[str, ...],
) -> None:
    outcomes: list[int] = []

    def change_the_user() -> None:  # an administrator's command, committed while argon2 runs
        result = run_cli(dev_server.env, *change, user.username, stdin="a brand new password\n")
        outcomes.append(result.returncode)

    _during_first_verify(monkeypatch, _password_hash(dev_server.env, user.id), change_the_user)
    browser = Browser(dev_server)

    response = browser.login(user.username, user.password)

    assert outcomes == [0]
    assert response.status_code == 401
    assert stored_sessions(dev_server.env, user.id) == []
    assert browser.get("/account").status_code == 302
