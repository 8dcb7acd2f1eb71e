"""The command line loads a command family only when it runs, and its help still lists all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from echo_identity.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_summary_in_the_top_level_help_is_the_commands_own(name: str) -> None:
    command = COMMANDS[name].load()
    first_paragraph = " ".join((command.help or "").split("\n\n")[0].split())
    assert COMMANDS[name].summary == first_paragraph
    assert command.name == name


def test_top_level_help_lists_every_family_with_its_summary() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:")[1]
    for name in COMMANDS:
        assert f"  {name} " in listed
    assert "Create and manage user accounts." in listed


def test_a_family_runs_through_the_lazy_group() -> None:
    result = CliRunner().invoke(main, ["users", "--help"])
    assert result.exit_code == 0
    assert "set-password" in result.output
    assert isinstance(main, click.Group)
    assert main.get_command(click.Context(main), "nonexistent") is None


def test_importing_the_cli_imports_no_command_family_nor_the_database_layer() -> None:
    probe = (
        "import sys, echo_identity.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('sqlalchemy', 'flask', "
        "'alembic', 'echo_identity.cli.'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


# What a command needs when it runs, never for its --help: settings (pydantic), the database
# (SQLAlchemy, Alembic), the web stack (Flask, Werkzeug, Authlib), logging (structlog), JOSE
# (joserfc, cryptography), the server (granian) and the progress bars (rich).
_LOADED_ONLY_TO_RUN = (
    "pydantic",
    "sqlalchemy",
    "alembic",
    "flask",
    "werkzeug",
    "authlib",
    "structlog",
    "joserfc",
    "cryptography",
    "granian",
    "rich",
)
_HELP_PROBE = """
import json, sys
from echo_identity.cli import main
for argv in json.loads(sys.argv[1]):
    try:
        main([*argv, "--help"], prog_name="echo-identity")
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
print()
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def _help_invocations(name: str) -> list[list[str]]:
    command = COMMANDS[name].load()
    subcommands = sorted(command.commands) if isinstance(command, click.Group) else []
    return [[name], *([name, sub] for sub in subcommands)]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_of_a_family_and_its_commands_loads_nothing_a_command_needs_only_to_run(
    name: str,
) -> None:
    invocations = _help_invocations(name)
    done = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE, json.dumps(invocations)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("ECHO_")},
    )
    assert done.stdout.count("Usage: echo-identity") == len(invocations)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert loaded.isdisjoint(_LOADED_ONLY_TO_RUN), sorted(loaded & set(_LOADED_ONLY_TO_RUN))


def test_choices_repeated_in_the_cli_are_the_domains_own() -> None:
    from echo_identity.cli import clients as clients_cli
    from echo_identity.cli import keys as keys_cli
    from echo_identity.cli import vault as vault_cli
    from echo_identity.crypto import jwk
    from echo_identity.idp import clients
    from echo_identity.keys import rotation

    assert clients_cli.GRANT_TYPES == clients.GRANT_TYPES
    assert clients_cli.ID_TOKEN_ALGORITHMS == clients.ID_TOKEN_ALGORITHMS
    assert keys_cli.ALGORITHMS == jwk.ALGORITHMS
    assert vault_cli.DEFAULT_BATCH_SIZE == rotation.DEFAULT_BATCH_SIZE
