"""``echo-identity audit``: the tamper-evident trail and what is read out of it."""

from __future__ import annotations

import click


@click.group()
def audit() -> None:
    """Verify, export and inspect the audit trail."""
