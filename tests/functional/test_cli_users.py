"""``echo-identity users``: scripts get JSON, mistakes get one clear line and change nothing."""

from __future__ import annotations

import json

from echo_identity.db import Database
from tests.support.browser import Browser
from tests.support.server import LiveServer, run_cli


def test_users_create_json_prints_sub_and_username(dev_server: LiveServer) -> None:
    result = run_cli(
        dev_server.env,
        "users",
        "create",
        "Carol",
        "--email",
        "carol@example.org",
        "--password-stdin",
        "--json",
        stdin="carol-password-1\n",
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["username"] == "carol"
    assert len(created["sub"]) == 36
    assert Browser(dev_server).login("carol", "carol-password-1").status_code == 302


def test_users_create_refuses_a_duplicate_with_a_stable_code(dev_server: LiveServer) -> None:
    args = ("users", "create", "dave", "--email", "dave@example.org", "--password-stdin", "--json")
    assert run_cli(dev_server.env, *args, stdin="dave-password-1\n").returncode == 0
    again = run_cli(
        dev_server.env,
        *args[:3],
        "--email",
        "other@example.org",
        *args[5:],
        stdin="another-password\n",
    )
    assert again.returncode == 1
    assert json.loads(again.stdout)["error"] == "username_taken"
    assert again.stderr.startswith("error: ")
    assert Browser(dev_server).login("dave", "another-password").status_code == 401


def test_users_create_with_a_short_password_stores_nothing(dev_server: LiveServer) -> None:
    result = run_cli(
        dev_server.env,
        "users",
        "create",
        "erin",
        "--email",
        "erin@example.org",
        "--password-stdin",
        stdin="short\n",
    )
    assert result.returncode == 1
    assert "8 to 1024 characters" in result.stderr
    listing = json.loads(run_cli(dev_server.env, "users", "list", "--json").stdout)
    assert "erin" not in [u["username"] for u in listing["users"]]


def test_users_create_without_stdin_password_and_no_terminal_explains_the_flag(
    dev_server: LiveServer,
) -> None:
    result = run_cli(
        dev_server.env, "users", "create", "frank", "--email", "f@example.org", stdin=""
    )
    assert result.returncode == 1
    assert "--password-stdin" in result.stderr


def test_set_password_replaces_the_old_one(dev_server: LiveServer) -> None:
    run_cli(
        dev_server.env,
        "users",
        "create",
        "gina",
        "--email",
        "gina@example.org",
        "--password-stdin",
        stdin="gina-first-pw\n",
    )
    result = run_cli(
        dev_server.env,
        "users",
        "set-password",
        "gina",
        "--password-stdin",
        stdin="gina-second-pw\n",
    )
    assert result.returncode == 0, result.stderr
    assert Browser(dev_server).login("gina", "gina-first-pw").status_code == 401
    assert Browser(dev_server).login("gina", "gina-second-pw").status_code == 302


def test_commands_on_an_unmigrated_database_say_how_to_fix_it(
    app_env: dict[str, str], database_url: str
) -> None:
    Database(database_url).dispose()
    result = run_cli(app_env, "users", "list")
    assert result.returncode == 1
    assert "echo-identity db upgrade" in result.stderr
