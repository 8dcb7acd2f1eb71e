"""``echo-identity worker``: keeps vault tokens fresh and seals the audit trail."""

from __future__ import annotations

import click

from echo_identity.cli.runtime import database_or_exit, emit, json_option, settings_or_exit


@click.command()
@click.option("--once", is_flag=True, help="Run one pass and exit (for cron or tests).")
@json_option
def worker(once: bool, as_json: bool) -> None:
    """Refresh vault tokens before they expire, delete expired ones that cannot be refreshed,
    and seal new audit events into the signed hash chain.

    Runs a pass every ECHO_WORKER_INTERVAL seconds. Start as many as you like on PostgreSQL:
    they share the work without refreshing a connection twice.
    """
    from echo_identity.worker import build_worker, run_forever, run_pass  # when it runs

    settings = settings_or_exit()
    jobs = build_worker(settings, database_or_exit(settings))
    if once:
        result = run_pass(jobs)
        emit(
            {
                "refreshed": result.refreshed,
                "failed": result.failed,
                "expired": result.expired,
                "sealed": result.sealed,
                "purged": result.purged,
                "pruned": result.pruned,
            },
            f"refreshed {result.refreshed}, failed {result.failed}, expired {result.expired}, "
            f"sealed {result.sealed}, purged {sum(result.purged.values())}, "
            f"pruned {sum(result.pruned.values())}",
            as_json=as_json,
        )
        return
    run_forever(jobs)
