"""Sign-in attempts are rate limited per client IP."""

from __future__ import annotations

from pathlib import Path

from tests.factories import create_user
from tests.support.browser import Browser
from tests.support.environment import app_environment
from tests.support.server import start_server


def test_login_attempts_beyond_the_limit_get_429_with_retry_after(
    tmp_path: Path, database_url: str
) -> None:
    env = app_environment(tmp_path / "var", database_url, ECHO_LOGIN_RATE_LIMIT="3/minute")
    server = start_server(env, tmp_path / "server.log")
    try:
        user = create_user(database_url)
        browser = Browser(server)
        statuses = [browser.login(user.username, "wrong-password").status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        blocked = browser.login(user.username, user.password)
        assert blocked.status_code == 429
        assert "rate_limited" in blocked.text
        assert int(blocked.headers["retry-after"]) > 0
        assert browser.get("/account").status_code == 302  # the right password did not get in
        assert browser.get("/login").status_code == 200  # viewing the form is not limited
    finally:
        server.stop()
