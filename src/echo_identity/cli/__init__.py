"""The ``echo-identity`` command line: one module per command family."""

from __future__ import annotations

import click

from echo_identity import __version__
from echo_identity.cli import (
    audit,
    clients,
    db,
    demo,
    keys,
    providers,
    report,
    serve,
    users,
    vault,
    worker,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="echo-identity")
def main() -> None:
    """Echo Identity: OpenID Connect provider, token vault and audit trail.

    Configuration comes from ECHO_* environment variables (docs/configuration.md).
    Production is the default; set ECHO_DEV_MODE=1 on a development machine.
    """


main.add_command(serve.serve)
main.add_command(db.db)
main.add_command(users.users)
main.add_command(demo.demo)
main.add_command(clients.clients)
main.add_command(keys.keys)
main.add_command(providers.providers)
main.add_command(worker.worker)
main.add_command(vault.vault)
main.add_command(audit.audit)
main.add_command(report.report)
