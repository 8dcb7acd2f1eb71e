"""Real ``echo-identity`` processes, for the few tests that need one (``tests/process/``):
``serve`` under granian, several workers, start-up refusal, the quick start."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.environment import process_environment
from tests.support.server import LiveServer, free_port

BIN = Path(sys.executable).parent


def run_cli_process(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``echo-identity ARGS`` as a process with exactly the ECHO_* variables in ``env``."""
    return subprocess.run(
        [str(BIN / "echo-identity"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=process_environment(env),
        timeout=timeout,
        check=False,
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_server_process(
    env: dict[str, str], log_path: Path, *, migrate: bool = True, workers: int = 1
) -> LiveServer:
    """Migrate the database, start ``echo-identity serve`` and wait until /readyz answers.

    A development server without an explicit ``ECHO_ISSUER`` gets its own URL as issuer.
    Raises ``RuntimeError`` when the server exits early or is not ready within two minutes.
    """
    port = free_port()
    env.setdefault("ECHO_ISSUER", f"http://127.0.0.1:{port}")
    if migrate:
        result = run_cli_process(env, "db", "upgrade")
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
    server = LiveServer(f"http://127.0.0.1:{port}", env, log_path)
    server._stop = lambda: stop_process(process)
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
