"""A password used to sign in appears in no log line and no database column."""

from __future__ import annotations

import redis
from sqlalchemy import MetaData, select

from echo_identity.db import Database
from tests.factories import create_user
from tests.support.browser import Browser
from tests.support.secret_scan import echo_shaped
from tests.support.server import LiveServer


def _every_stored_value(env: dict[str, str]) -> list[str]:
    """Every column of every row, plus every Redis key and value when sessions live there."""
    database = Database(env["ECHO_DATABASE_URL"])
    metadata = MetaData()
    metadata.reflect(database.engine)
    values: list[str] = []
    with database.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                values.extend(str(value) for value in row)
    database.dispose()
    if env.get("ECHO_REDIS_URL"):
        with redis.Redis.from_url(env["ECHO_REDIS_URL"]) as client:
            for key in client.scan_iter(env["ECHO_REDIS_PREFIX"] + ":*"):
                values.append(key.decode())
                if client.type(key) == b"string":
                    values.append(client.get(key).decode())  # type: ignore[union-attr]
                else:
                    values.extend(m.decode() for m in client.smembers(key))
    return values


def test_login_password_reaches_no_log_line_and_no_database_column(
    dev_server: LiveServer,
) -> None:
    user = create_user(dev_server.env["ECHO_DATABASE_URL"])
    browser = Browser(dev_server)
    browser.login(user.username, "wrong-" + user.password)
    assert browser.login(user.username, user.password).status_code == 302
    browser.get("/account")
    browser.get("/account/sessions")
    browser.post_form("/account", "/logout", {})

    logs = dev_server.logs()
    assert user.username in logs or "login_succeeded" in logs  # the log was really captured
    assert user.password not in logs
    stored = _every_stored_value(dev_server.env)
    assert any(user.username == value for value in stored)  # the scan really read the users
    assert not [value for value in stored if user.password in value]
    # Nothing shaped like an Echo secret (session ids are echo_ss_…) is stored or logged.
    assert echo_shaped(logs) == []
    assert not [value for value in stored if echo_shaped(value)]


def test_session_cookie_value_is_not_stored_in_clear(dev_server: LiveServer) -> None:
    user = create_user(dev_server.env["ECHO_DATABASE_URL"])
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    cookie = browser.cookies["echo_session"]
    stored = _every_stored_value(dev_server.env)
    assert any(browser.session_digest() in value for value in stored)
    assert not [value for value in stored if cookie in value]
    assert cookie not in dev_server.logs()
    assert not [value for value in stored if echo_shaped(value)]
