"""docs/incident-response.md cannot drift from the command line: every ``echo-identity`` line of
its ``sh`` blocks names a command that exists, with options it has and as many arguments as it
takes, and the runbook keeps the commands each scenario depends on."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from echo_identity.cli import main

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "incident-response.md"
_SH_BLOCK = re.compile(r"^[ \t]*```sh[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_OPERATORS = set("|&;<>()")


def runbook_lines(text: str) -> list[str]:
    """The ``echo-identity`` command lines of the ``sh`` blocks (continuations joined)."""
    lines = []
    for block in _SH_BLOCK.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            words = _words(line)
            if words and words[0] == "echo-identity":
                lines.append(line.strip())
    return lines


def _words(line: str) -> list[str]:
    """The words of the command on ``line``: leading ``VAR=value`` assignments dropped, cut at
    the first shell operator (a pipe, a redirection)."""
    lexer = shlex.shlex(line.strip(), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    for word in lexer:
        if set(word) <= _SHELL_OPERATORS:
            break
        if not words and _ASSIGNMENT.match(word):
            continue
        words.append(word)
    return words


def resolve(words: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """The command path, the command and its remaining words; raises ``LookupError`` for a
    command that does not exist."""
    command: click.Command = main
    path: list[str] = []
    rest = words[1:]
    while isinstance(command, click.Group):
        if not rest:
            raise LookupError(f"{' '.join(words)}: a group needs a command")
        name = rest.pop(0)
        found = command.get_command(click.Context(command), name)
        if found is None:
            raise LookupError(f"no command {' '.join(['echo-identity', *path, name])}")
        command, path = found, [*path, name]
    return path, command, rest


def problems(line: str) -> list[str]:
    """What is wrong with one runbook command line (empty: it matches the command line)."""
    try:
        path, command, rest = resolve(_words(line))
    except LookupError as exc:
        return [str(exc)]
    options = {
        name: param
        for param in command.params
        if isinstance(param, click.Option)
        for name in param.opts
    }
    found: list[str] = []
    positional = 0
    words = iter(rest)
    for word in words:
        if not word.startswith("-"):
            positional += 1
            continue
        name, has_value, _ = word.partition("=")
        option = options.get(name)
        if option is None:
            found.append(f"{line}: {' '.join(path)} has no option {name}")
            continue
        if not option.is_flag and not has_value and next(words, None) is None:
            found.append(f"{line}: {name} needs a value")
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if all(a.nargs >= 0 for a in arguments) and positional != sum(a.nargs for a in arguments):
        found.append(f"{line}: {positional} argument(s) given, {' '.join(path)} takes {arguments}")
    helped = CliRunner().invoke(main, [*path, "--help"])
    if helped.exit_code != 0:
        found.append(f"{line}: --help exits {helped.exit_code}: {helped.output}")
    return found


RUNBOOK_LINES = runbook_lines(RUNBOOK.read_text(encoding="utf-8"))


@pytest.mark.parametrize("line", RUNBOOK_LINES)
def test_every_runbook_command_exists_with_its_options_and_arguments(line: str) -> None:
    assert problems(line) == []


# What each scenario of issue 13 depends on: dropping one from the runbook fails here.
REQUIRED = [
    ("vault", "rotate-kek"),
    ("vault", "rotate-deks"),
    ("keys", "rotate", "--retire-now"),
    ("clients", "rotate-secret"),
    ("clients", "revoke-tokens"),
    ("users", "end-sessions"),
    ("users", "revoke-grants"),
    ("audit", "export", "--user"),
    ("audit", "verify"),
    ("backup", "verify"),
]


@pytest.mark.parametrize("needed", REQUIRED, ids=" ".join)
def test_the_runbook_keeps_the_commands_each_scenario_needs(needed: tuple[str, ...]) -> None:
    assert any(
        _words(line)[1:3] == list(needed[:2]) and set(needed[2:]) <= set(_words(line))
        for line in RUNBOOK_LINES
    ), f"docs/incident-response.md no longer runs echo-identity {' '.join(needed)}"


def test_every_scenario_section_has_commands() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert len(sections) >= 6
    for section in sections:
        assert runbook_lines(section), f"section {section.splitlines()[0]!r} runs no command"


@pytest.mark.parametrize(
    ("line", "wrong"),
    [
        ("echo-identity keys rotate --retire-later", "has no option --retire-later"),
        ("echo-identity clients rotate-key ID", "no command echo-identity clients rotate-key"),
        ("echo-identity clients revoke-tokens", "0 argument(s) given"),
        ("echo-identity clients revoke-tokens A B --json", "2 argument(s) given"),
        ("echo-identity audit export --out", "--out needs a value"),
    ],
)
def test_the_checker_finds_a_drifted_line(line: str, wrong: str) -> None:
    assert any(wrong in problem for problem in problems(line))


def test_lines_are_read_as_the_shell_reads_them() -> None:
    text = (
        "```sh\n"
        'ECHO_DATABASE_URL="$URL" echo-identity audit export --out "$E/x.jsonl" \\\n'
        "  --json > out.json\n"
        "mkdir -p x\n"
        "```\n"
    )
    [line] = runbook_lines(text)
    assert _words(line) == ["echo-identity", "audit", "export", "--out", "$E/x.jsonl", "--json"]
