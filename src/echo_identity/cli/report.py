"""``echo-identity report``: the security report as HTML (with charts) or JSON."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import click

from echo_identity.cli.runtime import database_or_exit, emit, fail, json_option, settings_or_exit

if TYPE_CHECKING:
    from echo_identity.config import Settings
    from echo_identity.db import Database
    from echo_identity.reports.security_report import SecurityReport


def build_report(
    database: Database, settings: Settings, since: str, *, show_progress: bool
) -> SecurityReport:
    """Parse ``since``, then aggregate; raises ``ValueError`` for a bad ``since``.

    ``show_progress`` draws a spinner naming the section being aggregated on standard error.
    """
    from rich.console import Console

    from echo_identity.db import utcnow
    from echo_identity.reports.security_report import ReportPolicy, SecurityReportBuilder
    from echo_identity.reports.window import parse_since

    now = utcnow()
    start = parse_since(since, now)
    with ExitStack() as stack:
        session = stack.enter_context(database.read_session())
        progress: Callable[[str], None] | None = None
        if show_progress:
            status = stack.enter_context(Console(stderr=True).status("security report"))

            def progress(section: str) -> None:
                status.update(f"security report: {section}")

        return SecurityReportBuilder(session, ReportPolicy.from_settings(settings)).build(
            start, now, progress=progress
        )


def render(report: SecurityReport, fmt: str) -> str:
    """The report as an HTML document (``fmt == "html"``) or indented JSON."""
    if fmt == "html":
        from echo_identity.reports.html import render_report_html

        return render_report_html(report)
    return json.dumps(report.to_dict(), indent=2) + "\n"


@click.command()
@click.option(
    "--since",
    default="7d",
    show_default=True,
    help="Window start: a duration back from now (30m, 24h, 7d, 2w) or an ISO 8601 date.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "json"]),
    default="html",
    show_default=True,
    help="HTML with inline SVG charts, or JSON with the same content.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the report to this file (default: standard output).",
)
@json_option
def report(since: str, fmt: str, out: Path | None, as_json: bool) -> None:
    """Security report over the audit trail: sign-ins, lock-outs, tokens and vault reads per
    client, alerts, top source IPs, connections needing re-authentication, key ages and
    clean-up counts.

    With --json (and --out), prints a one-line summary object instead of a sentence.
    """
    settings = settings_or_exit()
    database = database_or_exit(settings)
    started = time.perf_counter()
    try:
        result = build_report(
            database, settings, since, show_progress=not as_json and sys.stderr.isatty()
        )
    except ValueError as exc:
        fail(f"--since: {exc}", as_json=as_json, code="invalid_since")
    finally:
        database.dispose()
    text = render(result, fmt)
    elapsed = round(time.perf_counter() - started, 3)
    if out is None:
        if as_json and fmt == "html":
            fail("--json needs --out with --format html", as_json=True, code="invalid_option")
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}", as_json=as_json, code="write_failed")
    emit(
        {
            "out": str(out),
            "format": fmt,
            "since": result.since,
            "until": result.until,
            "total_events": result.total_events,
            "seconds": elapsed,
        },
        f"wrote {fmt} report of {result.total_events} events ({result.since} to "
        f"{result.until}) to {out} in {elapsed} s",
        as_json=as_json,
    )
