"""Every token answered has its audit row, even when the whole server is killed with SIGKILL
in the middle of concurrent requests (group-committed audit writes, ``audit/writer.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent
from echo_identity.crypto.digests import fingerprint
from echo_identity.db import Database
from tests.support.environment import app_environment, process_environment
from tests.support.processes import BIN, run_cli_process
from tests.support.server import free_port

CALLERS = 12
KILL_AFTER = 150  # answered tokens before the kill (a count, not a time)


def test_no_answered_token_loses_its_audit_row_to_a_kill_9(
    tmp_path: Path, database_url: str
) -> None:
    env = app_environment(tmp_path / "var", database_url, production=True)
    env.pop("ECHO_TRUSTED_PROXY_HOPS")  # the callers connect directly
    assert run_cli_process(env, "db", "upgrade").returncode == 0
    created = run_cli_process(
        env, "clients", "create", "--name", "load", "--grant-type", "client_credentials",
        "--scope", "api:read", "--json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    client = json.loads(created.stdout)
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "echo-identity"), "serve", "--port", str(port), "--workers", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=process_environment(env),
        start_new_session=True,  # its own process group: the kill reaches every worker
    )
    base = f"http://127.0.0.1:{port}"
    answered: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def call_until_the_server_dies() -> None:
        auth = (client["client_id"], client["client_secret"])
        with httpx.Client(base_url=base, auth=auth, timeout=30) as http:
            while True:
                try:
                    response = http.post(
                        "/token", data={"grant_type": "client_credentials", "scope": "api:read"}
                    )
                except httpx.TransportError:
                    return  # the server is gone
                assert response.status_code == 200, response.text
                with lock:
                    answered.append(response.json()["access_token"])
                    if len(answered) >= KILL_AFTER:
                        enough.set()

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        callers = [threading.Thread(target=call_until_the_server_dies) for _ in range(CALLERS)]
        for caller in callers:
            caller.start()
        assert enough.wait(120), (tmp_path / "server.log").read_text()
        os.killpg(server.pid, signal.SIGKILL)  # mid-load: requests are in flight
        server.wait(30)
        for caller in callers:
            caller.join(60)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
        log.close()

    database = Database(database_url)
    with database.read_session() as session:
        recorded = set(
            session.scalars(
                select(AuditEvent.token_fingerprint).where(
                    AuditEvent.event_type == str(EventType.TOKEN_ISSUED)
                )
            )
        )
    missing = [token for token in answered if fingerprint(token) not in recorded]
    assert len(answered) >= KILL_AFTER
    assert missing == []
