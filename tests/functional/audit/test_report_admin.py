"""/admin/security-report: the HTML report for administrators only, within the CSP."""

from __future__ import annotations

import json
import re

from tests.factories import create_user
from tests.support.browser import Browser
from tests.support.environment import settings_for
from tests.support.server import LiveServer, run_cli

PAGE = "/admin/security-report"


def signed_in(server: LiveServer, *, admin: bool) -> Browser:
    user = create_user(settings_for(server.env).database_url, admin=admin)
    browser = Browser(server)
    assert browser.login(user.username, user.password).status_code == 302
    return browser


def test_visitors_are_sent_to_sign_in(dev_server: LiveServer) -> None:
    response = Browser(dev_server).get(PAGE)
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login?next=")


def test_a_signed_in_user_who_is_not_an_admin_gets_403(dev_server: LiveServer) -> None:
    response = signed_in(dev_server, admin=False).get(PAGE)
    assert response.status_code == 403
    assert "Security report" not in response.text


def test_an_admin_sees_the_report_with_inline_svg_charts_allowed_by_the_csp(
    dev_server: LiveServer,
) -> None:
    response = signed_in(dev_server, admin=True).get(PAGE + "?since=2d")
    assert response.status_code == 200
    page = response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "<svg" in page
    assert "<script" not in page
    assert "<style" not in page
    assert " style=" not in page  # inline style attributes would be blocked by the CSP
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert 'href="/static/style.css"' in page
    for heading in ("Sign-ins", "Top source IPs", "Key ages", "Clean-up", "Alerts by rule"):
        assert heading in page


def test_admin_page_and_cli_report_show_the_same_sign_in_counts(dev_server: LiveServer) -> None:
    browser = signed_in(dev_server, admin=True)
    cli = run_cli(dev_server.env, "report", "--since", "2d", "--format", "json")
    assert cli.returncode == 0, cli.stderr
    page = browser.get(PAGE + "?since=2d").text
    logins = json.loads(cli.stdout)["logins"]
    assert f"Successful sign-ins</th><td>{logins['success']}</td>" in page
    assert f"Failed sign-ins</th><td>{logins['failure']}</td>" in page


def test_a_malformed_window_gets_400_with_a_stable_code(dev_server: LiveServer) -> None:
    response = signed_in(dev_server, admin=True).get(PAGE + "?since=soon")
    assert response.status_code == 400
    assert "invalid_since" in response.text
    assert "Traceback" not in response.text
