"""``echo-identity serve``: the HTTP server (granian, WSGI mode)."""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

import click

from echo_identity.cli.runtime import database_or_exit, settings_or_exit

# Route granian's own messages through our (redacting, JSON) root handler.
_GRANIAN_LOGGING = {
    "loggers": {
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": True},
    }
}


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes (roughly one per core).",
)
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Request threads per worker.",
)
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve Echo Identity over HTTP.

    Settings are validated and the database checked before the port is bound, so a
    misconfigured deployment fails at once with a message naming the variable.
    """
    from echo_identity.idp.keys import ensure_signing_keys  # imported when it runs
    from echo_identity.idp.provider import key_schedule
    from echo_identity.keys.kek_providers import keyring_factory
    from echo_identity.worker import build_worker, start_in_background

    settings = settings_or_exit()
    database = database_or_exit(settings)
    _metrics_directory(workers)
    # first start: one key per algorithm, before workers
    ensure_signing_keys(database, keyring_factory(settings), key_schedule(settings))
    if settings.dev_mode:  # development: keep vault tokens fresh without a separate worker
        start_in_background(build_worker(settings, database))
    else:
        database.dispose()

    from granian import Granian  # imported late: it is heavy and only serve needs it
    from granian.constants import Interfaces

    # Start workers as fresh interpreters, never as forks of this process: in development it
    # runs the background worker thread, and a fork taken while that thread holds a lock (or
    # uses a database connection) leaves the lock held forever in the child, whose requests
    # then hang. Each worker builds its own app anyway (the factory below).
    multiprocessing.set_start_method("spawn", force=True)

    Granian(
        "echo_identity.wsgi:create_wsgi_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        log_dictconfig=_GRANIAN_LOGGING,
    ).serve()


def _metrics_directory(workers: int) -> None:
    """Give prometheus-client's multiprocess mode a directory that is empty at start.

    With several workers, /metrics must sum every worker's request counters; prometheus-client
    does that through files in ``PROMETHEUS_MULTIPROC_DIR``, read when the library is first
    imported (in each worker, after this runs). An operator's directory is emptied of stale
    files; without one, a private temporary directory is made for this run and removed at exit.
    """
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        for stale in Path(configured).glob("*.db"):
            stale.unlink()
        return
    if workers > 1:
        directory = tempfile.mkdtemp(prefix="echo-identity-metrics-")
        atexit.register(shutil.rmtree, directory, True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
