"""The README quick start: ``make run`` serves /login and the demo user can sign in."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.browser import Browser
from tests.support.environment import FAST_ARGON2
from tests.support.server import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_make_run_serves_login_and_the_demo_user_can_sign_in(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECHO_", "MAKE"))}
    env.update(FAST_ARGON2, ECHO_VAR_DIR=str(tmp_path / "var"), PORT=str(port))
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base_url}/login", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        output = log_path.read_text()
        match = re.search(r"Demo user\s+(\S+) / (\S+)", output)
        assert match, output
        assert f"{base_url}/login" in output
        server = LiveServer(base_url, env, log_path)
        browser = Browser(server)
        assert browser.login(match.group(1), match.group(2)).headers["location"] == "/account"
        assert "demo@example.org" in browser.get("/account").text
        assert (tmp_path / "var" / "echo-identity.db").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
