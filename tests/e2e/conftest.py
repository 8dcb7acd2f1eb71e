"""Browser tests drive headless Chromium against a real ``echo-identity serve`` process.

Chromium and chromedriver come from the Debian packages (``apt-get install chromium
chromium-driver``); Selenium Manager is never asked to download anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.factories import TestUser, create_user
from tests.support.server import LiveServer, running_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The test machine reaches nothing beyond localhost: without the background-networking
# switches Chromium keeps retrying its update, sync and field-trial endpoints.
CHROMIUM_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,800",
)


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A development-mode server on SQLite shared by the session (tests make their own users)."""
    with running_server(tmp_path_factory.mktemp("e2e")) as server:
        yield server


@pytest.fixture
def user(dev_server: LiveServer) -> TestUser:
    return create_user(dev_server.env["ECHO_DATABASE_URL"])


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile (so no cookies) that records its console."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield chrome
    chrome.quit()
