"""``echo-identity serve`` refuses to start on a bad configuration, before binding a port
(real processes: the refusal is about what the process does before it listens)."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from tests.support.environment import app_environment
from tests.support.processes import run_cli_process as run_cli
from tests.support.processes import start_server_process as start_server
from tests.support.server import free_port


def _production_env(tmp_path: Path, database_url: str, **changes: str) -> dict[str, str]:
    env = app_environment(tmp_path / "var", database_url, production=True)
    for key, value in changes.items():
        if value == "<unset>":
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"ECHO_SECRET_KEY": "<unset>"}, "ECHO_SECRET_KEY"),
        ({"ECHO_SECRET_KEY": "short-but-random-Zq9"}, "ECHO_SECRET_KEY"),
        (
            {"ECHO_SECRET_KEY": "change-me-to-a-long-random-value-please-0123456789"},
            "ECHO_SECRET_KEY",
        ),
        ({"ECHO_ISSUER": "http://id.example.test"}, "ECHO_ISSUER"),
        ({"ECHO_ISSUER": "<unset>"}, "ECHO_ISSUER"),
        ({"ECHO_VAULT_KEK": "<unset>"}, "ECHO_VAULT_KEK"),
        ({"ECHO_VAULT_KEK": "not-base64-32-bytes"}, "ECHO_VAULT_KEK"),
    ],
)
def test_production_serve_exits_naming_the_bad_variable_before_binding(
    tmp_path: Path, database_url: str, changes: dict[str, str], variable: str
) -> None:
    port = free_port()
    result = run_cli(
        _production_env(tmp_path, database_url, **changes), "serve", "--port", str(port), timeout=30
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert _port_is_free(port)
    for secret in changes.values():
        if secret != "<unset>" and "SECRET" in variable:
            assert secret not in result.stderr + result.stdout


def test_missing_secret_hint_says_how_to_generate_one(tmp_path: Path, database_url: str) -> None:
    result = run_cli(_production_env(tmp_path, database_url, ECHO_SECRET_KEY="<unset>"), "serve")
    assert "secrets.token_urlsafe" in result.stderr


def test_development_generates_missing_secrets_once_with_owner_only_permissions(
    tmp_path: Path, database_url: str
) -> None:
    env = app_environment(tmp_path / "var", database_url)
    del env["ECHO_SECRET_KEY"], env["ECHO_VAULT_KEK"]
    first = run_cli(env, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert "development_secrets_in_use" in first.stderr
    key_file, kek_file = tmp_path / "var" / "secret_key", tmp_path / "var" / "vault_kek"
    for path in (key_file, kek_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = key_file.read_text()
    assert run_cli(env, "db", "current").returncode == 0
    assert key_file.read_text() == key


def test_serve_refuses_an_unmigrated_database_with_a_hint(
    tmp_path: Path, database_url: str
) -> None:
    env = app_environment(tmp_path / "var", database_url)
    result = run_cli(env, "serve", "--port", str(free_port()))
    assert result.returncode == 1
    assert "echo-identity db upgrade" in result.stderr


def test_production_server_starts_with_good_settings(tmp_path: Path, database_url: str) -> None:
    server = start_server(_production_env(tmp_path, database_url), tmp_path / "server.log")
    try:
        with server.client() as client:
            assert client.get("/healthz").json() == {"status": "ok"}
    finally:
        server.stop()
