"""The ``echo-identity`` command line: one module per command family.

A family is imported only when it runs (:class:`LazyGroup`): ``echo-identity --help`` and a
``users`` command do not pay for Alembic, granian or the other families' imports. Each
family's one-line summary is written here so the top-level help needs no import; a unit test
checks that it still matches the command's own help.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

from echo_identity import __version__


@dataclass(frozen=True)
class LazyCommand:
    """Where a command family lives (``module:attribute``) and its one-line summary."""

    target: str
    summary: str

    def load(self) -> click.Command:
        """Import the family's module and return its command."""
        module, _, attribute = self.target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


class LazyGroup(click.Group):
    """A group whose subcommands are imported when they are invoked (or asked for help), as
    the click documentation's lazy-loading pattern; the group's own help lists the summaries
    without importing anything."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, LazyCommand], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = self.lazy_commands.get(cmd_name)
        if lazy is not None and cmd_name not in self.commands:
            self.add_command(lazy.load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            lazy = self.lazy_commands.get(name)
            if lazy is not None and name not in self.commands:
                # shortened exactly as click shortens a loaded command's help
                summary = click.Command(name, help=lazy.summary).get_short_help_str(limit)
                rows.append((name, summary))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


COMMANDS = {
    "audit": LazyCommand(
        "echo_identity.cli.audit:audit", "Verify, export and inspect the audit trail."
    ),
    "backup": LazyCommand(
        "echo_identity.cli.backup:backup",
        "Encrypted backups: create, verify and restore them, and export the data keys.",
    ),
    "clients": LazyCommand(
        "echo_identity.cli.clients:clients",
        "Register and manage OAuth clients (relying parties and services).",
    ),
    "db": LazyCommand("echo_identity.cli.db:db", "Database schema management."),
    "demo": LazyCommand(
        "echo_identity.cli.demo:demo",
        "Create the demo user and client once, print their credentials and the useful URLs.",
    ),
    "keys": LazyCommand(
        "echo_identity.cli.keys:keys", "Signing keys (RS256, ES256, EdDSA) published at /jwks."
    ),
    "providers": LazyCommand(
        "echo_identity.cli.providers:providers",
        "Third-party OAuth providers (GitHub, Google, another OpenID provider …).",
    ),
    "report": LazyCommand(
        "echo_identity.cli.report:report",
        "Security report over the audit trail: sign-ins, lock-outs, tokens and vault reads per "
        "client, alerts, top source IPs, connections needing re-authentication, key ages and "
        "clean-up counts.",
    ),
    "serve": LazyCommand("echo_identity.cli.serve:serve", "Serve Echo Identity over HTTP."),
    "users": LazyCommand("echo_identity.cli.users:users", "Create and manage user accounts."),
    "vault": LazyCommand(
        "echo_identity.cli.vault:vault",
        "Token vault encryption keys: re-wrap data keys under a new KEK, or rotate the data keys.",
    ),
    "worker": LazyCommand(
        "echo_identity.cli.worker:worker",
        "Refresh vault tokens before they expire, delete expired ones that cannot be refreshed, "
        "and seal new audit events into the signed hash chain.",
    ),
}


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="echo-identity")
def main() -> None:
    """Echo Identity: OpenID Connect provider, token vault and audit trail.

    Configuration comes from ECHO_* environment variables (docs/configuration.md).
    Production is the default; set ECHO_DEV_MODE=1 on a development machine.
    """
