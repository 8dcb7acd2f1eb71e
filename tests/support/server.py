"""A real Echo Identity server process (``echo-identity serve``) for functional tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.databases import fresh_database_url
from tests.support.environment import app_environment, process_environment

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_cli(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``echo-identity ARGS`` with exactly the ECHO_* variables in ``env``."""
    return subprocess.run(
        [str(BIN / "echo-identity"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=process_environment(env),
        timeout=timeout,
        check=False,
    )


@dataclass
class LiveServer:
    base_url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10, **kwargs)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(
    env: dict[str, str], log_path: Path, *, migrate: bool = True, workers: int = 1
) -> LiveServer:
    """Migrate the database, start ``echo-identity serve`` and wait until /readyz answers.

    A development server without an explicit ``ECHO_ISSUER`` gets its own URL as issuer.
    """
    port = free_port()
    env.setdefault("ECHO_ISSUER", f"http://127.0.0.1:{port}")
    if migrate:
        result = run_cli(env, "db", "upgrade")
        assert result.returncode == 0, result.stderr
    with log_path.open("wb") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [
                str(BIN / "echo-identity"),
                "serve",
                "--port",
                str(port),
                "--threads",
                "4",
                "--workers",
                str(workers),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=process_environment(env),
        )
    server = LiveServer(f"http://127.0.0.1:{port}", env, log_path, process)
    # generous: on a loaded 2-core machine a cold start (imports, migrations) can take a minute
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.logs()}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not become ready:\n{server.logs()}")


@contextmanager
def running_server(tmp_dir: Path, *, production: bool = False) -> Iterator[LiveServer]:
    """A server on a fresh database in ``tmp_dir``, stopped and dropped afterwards."""
    with fresh_database_url(tmp_dir) as url:
        server = start_server(
            app_environment(tmp_dir / "var", url, production=production), tmp_dir / "server.log"
        )
        try:
            yield server
        finally:
            server.stop()
