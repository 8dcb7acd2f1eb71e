"""The command line loads a command family only when it runs, and its help still lists all."""

from __future__ import annotations

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
