"""Signing in and out through the real pages in headless Chromium."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.factories import TestUser
from tests.support.server import LiveServer

pytestmark = pytest.mark.browser

TRANSPARENT = "rgba(0, 0, 0, 0)"


def path_of(driver: Chrome) -> str:
    return urlsplit(driver.current_url).path


def submit_login_form(driver: Chrome, server: LiveServer, username: str, password: str) -> None:
    """Open /login, type the credentials and press "Sign in"; returns once the next page loaded."""
    driver.get(server.base_url + "/login")
    form_page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(form_page))


def sign_in(driver: Chrome, server: LiveServer, user: TestUser) -> None:
    submit_login_form(driver, server, user.username, user.password)
    assert path_of(driver) == "/account"


def account_field(driver: Chrome, label: str) -> str:
    """The text of the ``<dd>`` that follows the ``<dt>`` named ``label`` on /account."""
    return driver.find_element(By.XPATH, f"//dt[.='{label}']/following-sibling::dd[1]").text


def test_user_signs_in_with_the_form_and_signing_out_ends_the_session(
    driver: Chrome, dev_server: LiveServer, user: TestUser
) -> None:
    sign_in(driver, dev_server, user)
    assert account_field(driver, "Username") == user.username
    assert account_field(driver, "Subject") == user.sub

    account_page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.XPATH, "//button[.='Sign out']").click()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(account_page))
    assert path_of(driver) == "/login"

    driver.get(dev_server.base_url + "/account")
    assert path_of(driver) == "/login"
    assert driver.find_element(By.TAG_NAME, "h1").text == "Sign in"


def test_pages_load_without_csp_violations_or_console_errors_and_apply_the_stylesheet(
    driver: Chrome, dev_server: LiveServer, user: TestUser
) -> None:
    sign_in(driver, dev_server, user)  # loads /login, then /account
    driver.find_element(By.LINK_TEXT, "Your sessions").click()
    WebDriverWait(driver, 10).until(
        expected_conditions.url_to_be(dev_server.base_url + "/account/sessions")
    )
    header = driver.find_element(By.TAG_NAME, "header")

    # CSP violations are reported as SEVERE console entries ("Refused to load ...").
    entries = driver.get_log("browser")
    assert entries == []
    assert header.value_of_css_property("background-color") != TRANSPARENT


def test_session_cookie_is_hidden_from_scripts_yet_authenticates_the_browser(
    driver: Chrome, dev_server: LiveServer, user: TestUser
) -> None:
    sign_in(driver, dev_server, user)

    assert driver.get_cookie("echo_session") is not None
    assert "echo_session" not in driver.execute_script("return document.cookie")
    driver.get(dev_server.base_url + "/account")
    assert path_of(driver) == "/account"
    assert account_field(driver, "Username") == user.username


def test_wrong_password_shows_generic_error_and_stays_on_login_page(
    driver: Chrome, dev_server: LiveServer, user: TestUser
) -> None:
    submit_login_form(driver, dev_server, user.username, user.password + "-wrong")

    assert path_of(driver) == "/login"
    assert driver.find_element(By.CSS_SELECTOR, "[role=alert]").text == (
        "Invalid username or password."
    )
    driver.get(dev_server.base_url + "/account")
    assert path_of(driver) == "/login"
