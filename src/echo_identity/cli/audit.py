"""``echo-identity audit``: the tamper-evident trail and what is read out of it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from echo_identity.cli.runtime import (
    database_or_exit,
    echo_error,
    emit,
    fail,
    json_option,
    settings_or_exit,
)

if TYPE_CHECKING:  # SQLAlchemy loads when a command runs
    from echo_identity.audit.chain import Anchor
    from echo_identity.config import Settings
    from echo_identity.db import Database


@click.group()
def audit() -> None:
    """Verify, export and inspect the audit trail."""


@audit.command("verify")
@json_option
def verify(as_json: bool) -> None:
    """Recompute the hash chain and check every signed checkpoint.

    Exits 0 with a summary when the trail is intact; otherwise exits 1 naming the first event
    that was modified, deleted or inserted (or the checkpoint that does not verify). Once old
    events were pruned (ECHO_AUDIT_RETENTION_DAYS), the chain is checked from its signed
    retention anchor, which the summary states (or names, when it does not verify).
    """
    from echo_identity.audit.sealer import verify_trail

    settings = settings_or_exit()
    database = database_or_exit(settings)
    status = verify_trail(database)
    report, problem = status.report, status.report.problem
    summary = {
        "sealed": report.sealed,
        "unsealed": status.unsealed,
        "checkpoints": report.checkpoints,
        "head_seq": report.head_seq,
        "head_hash": report.head_hash,
        "anchor": _anchor_summary(report.anchor),
    }
    if problem is None:
        anchor = report.anchor
        pruned = (
            ""
            if anchor is None
            else f"\nstarts at the signed retention anchor: first kept event "
            f"{anchor.first_kept_id} (seq {anchor.first_kept_seq}); {anchor.pruned_count} "
            f"earlier events recorded {anchor.pruned_from.isoformat()} to "
            f"{anchor.pruned_through.isoformat()} pruned (last at "
            f"{anchor.created_at.isoformat()})"
        )
        emit(
            {"intact": True, **summary},
            f"audit trail intact: {report.sealed} sealed events, {status.unsealed} not yet "
            f"sealed, {report.checkpoints} signed checkpoints (head seq {report.head_seq})"
            + pruned,
            as_json=as_json,
        )
        return
    emit(
        {
            "intact": False,
            "problem": str(problem.kind),
            "event_id": problem.event_id,
            "seq": problem.seq,
            "message": problem.message,
            "hint": problem.hint,
            **summary,
        },
        f"audit trail BROKEN: {problem.message}\nhint: {problem.hint}",
        as_json=as_json,
    )
    sys.exit(1)


def _anchor_summary(anchor: Anchor | None) -> dict[str, object] | None:
    """The retention anchor ``verify`` started from, for ``--json`` (``None``: never pruned)."""
    if anchor is None:
        return None
    return {
        "first_kept_event_id": anchor.first_kept_id,
        "first_kept_seq": anchor.first_kept_seq,
        "previous_hash": anchor.previous_hash,
        "pruned_count": anchor.pruned_count,
        "pruned_from": anchor.pruned_from.isoformat(),
        "pruned_through": anchor.pruned_through.isoformat(),
        "pruned_at": anchor.created_at.isoformat(),
        "key_id": anchor.key_id,
    }


@audit.command("export")
@click.option("--since", default="7d", show_default=True, help="7d, 12h, 30m or ISO 8601 time.")
@click.option("--format", "fmt", type=click.Choice(["ocsf"]), default="ocsf", show_default=True)
@click.option("--out", "out", type=click.Path(dir_okay=False, writable=True), required=True)
@click.option(
    "--user",
    "user",
    metavar="SUB|NAME",
    help="Only the events about this user (by subject or user name): one account's evidence.",
)
@click.option("--client", "client_id", help="Only the events of this client id.")
@json_option
def export(
    since: str, fmt: str, out: str, user: str | None, client_id: str | None, as_json: bool
) -> None:
    """Export audit events as JSON lines in OCSF shape (Authentication 3002, API Activity 6003).

    People appear as their pseudonyms, as in the trail; --user keeps the events whose subject
    is that user's pseudonym (printed with the count), --client those of one client.
    """
    from echo_identity.audit.export import export_ocsf, parse_since

    settings = settings_or_exit()
    database = database_or_exit(settings)
    try:
        start = parse_since(since)
    except ValueError as exc:
        fail(f"--since: {exc}", as_json=as_json, code="invalid_since")
    subject = None if user is None else _pseudonym_or_exit(settings, database, user, as_json)
    with Path(out).open("w", encoding="utf-8") as handle:
        count = export_ocsf(database, start, handle, subject=subject, client_id=client_id)
    payload: dict[str, object] = {"exported": count, "format": fmt, "out": out}
    if subject is not None:
        payload["subject"] = subject
    emit(payload, f"exported {count} events to {out}", as_json=as_json)


def _pseudonym_or_exit(settings: Settings, database: Database, who: str, as_json: bool) -> str:
    """The audit pseudonym of the user whose sub or name is ``who``; exits when none is."""
    from echo_identity.audit.pseudonyms import Pseudonyms
    from echo_identity.privacy.errors import UnknownSubjectError
    from echo_identity.privacy.export import find_user

    with database.read_session() as session:
        user = find_user(session, who)
        if user is None:
            echo_error(
                UnknownSubjectError("No user has that subject or username."), as_json=as_json
            )
        sub = user.sub
    return Pseudonyms.from_secret(settings.secret_key_bytes()).of(sub)


@audit.command("alerts")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
def alerts(limit: int, as_json: bool) -> None:
    """List the most recent alerts raised by the detection rules."""
    from echo_identity.audit.alerts import alert_payload, recent_alerts

    settings = settings_or_exit()
    database = database_or_exit(settings)
    with database.read_session() as session:
        found = [alert_payload(a, settings.issuer) for a in recent_alerts(session, limit)]
    lines = [f"#{a['alert_id']} {a['severity']} {a['rule']}: {a['summary']}" for a in found]
    emit({"alerts": found}, "\n".join(lines) or "no alerts", as_json=as_json)


@audit.command("logs")
@click.option("--source", required=True, help="The client id that sent the logs.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@json_option
def logs(source: str, limit: int, as_json: bool) -> None:
    """Show the newest application-log events a service sent to /log."""
    from echo_identity.audit.log_ingest import logs_for_source

    settings = settings_or_exit()
    database = database_or_exit(settings)
    with database.read_session() as session:
        rows = [
            {
                "id": row.id,
                "received_at": row.received_at.isoformat(),
                "occurred_at": row.occurred_at.isoformat() if row.occurred_at else None,
                "level": row.level,
                "message": row.message,
                "fields": row.fields,
            }
            for row in logs_for_source(session, source, limit)
        ]
    lines = [f"{r['received_at']} {r['level']:8} {r['message']}" for r in rows]
    emit({"source": source, "logs": rows}, "\n".join(lines) or "no logs", as_json=as_json)
