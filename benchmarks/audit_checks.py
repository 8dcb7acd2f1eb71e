"""The audit rows a benchmark run must have written, and the trail they end up in.

After a run against a server that audits each call, :func:`load_audited` counts the rows of
one event type the run added (SQLite, opened read-only, read once the server is idle) and adds
a problem to the run unless every good answer has its row and there are no more rows than
requests sent. :func:`seal_and_verify_trail` then seals every event into Echo's hash chain with
the CLI and verifies the chain.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import Call, Run, Target, load, run_command  # isort: skip
from targets import echo_cli  # isort: skip

ISSUED_EVENT = "oauth.token.issued"


def count_events(database: Path | str, event_type: str) -> int:
    """Successful audit events of ``event_type`` in ``database``: a SQLite file (opened
    read-only) or a database URL (``targets.echo_database``)."""
    if isinstance(database, str):
        from sqlalchemy import create_engine, text  # only the PostgreSQL runs need it

        engine = create_engine(database)
        try:
            with engine.connect() as connection:
                return int(
                    connection.execute(
                        text(
                            "SELECT count(*) FROM audit_events"
                            " WHERE event_type = :type AND outcome = 'success'"
                        ),
                        {"type": event_type},
                    ).scalar_one()
                )
        finally:
            engine.dispose()
    uri = f"{database.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as connection:
        row = connection.execute(
            "SELECT count(*) FROM audit_events WHERE event_type = ? AND outcome = 'success'",
            (event_type,),
        ).fetchone()
    count: int = row[0]
    return count


def audit_mismatch(rows: int, answered: int, unanswered: int) -> str | None:
    """What is wrong with ``rows`` audit rows for a run with ``answered`` good answers and
    ``unanswered`` requests sent but not waited for; ``None`` when nothing is.

    Each good answer needs its row (the row commits before the answer). A request that wrk
    stopped waiting for may or may not have been served, so it may add a row; nothing else may.
    """
    if rows < answered:
        return f"{answered - rows} of {answered} good answers have no audit row ({rows} rows)"
    if rows > answered + unanswered:
        extra = rows - answered - unanswered
        return (
            f"{extra} audit rows more than requests served ({rows} rows, {answered} good "
            f"answers, {unanswered} requests not waited for)"
        )
    return None


def load_audited(
    wrk: str, target: Target, call: Call, database: Path | str, event_type: str, **options: Any
) -> Run:
    """:func:`harness.load` (``options`` are its keyword arguments), then the check that the
    run wrote one successful ``event_type`` audit row in ``database`` per good answer
    (:func:`audit_mismatch`)."""

    def rows() -> int:
        return count_events(database, event_type)

    run = load(wrk, target, call, served=rows, **options)
    problem = audit_mismatch(run.audit_rows or 0, run.ok, run.unanswered)
    if problem is not None:
        run.problems.append(f"{event_type}: {problem}")
    return run


def seal_and_verify_trail(folder: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Seal every audit event into the hash chain (one ``echo-identity worker --once`` pass,
    seal grace 0) and verify the chain (``echo-identity audit verify``). Call it with the
    servers stopped. ``valid`` is true when the chain is intact and nothing is left unsealed."""
    cli = echo_cli()
    sealing = {**env, "ECHO_AUDIT_SEAL_GRACE": "0"}
    worker = json.loads(run_command([cli, "worker", "--once", "--json"], env=sealing, cwd=folder))
    done = subprocess.run(  # noqa: S603 - fixed argv built by this script
        [cli, "audit", "verify", "--json"],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        verified: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        message = f"audit verify failed ({done.returncode}):\n{done.stderr[-2000:]}"
        raise SystemExit(message) from None
    return {
        "sealed_by_worker_pass": worker["sealed"],
        **verified,
        "valid": done.returncode == 0
        and verified.get("intact") is True
        and verified.get("unsealed") == 0,
    }


def describe_audit_rows(row: dict[str, Any], event_type: str) -> str:
    """The audit-row line of a report for a :func:`harness.summarise` row of audited runs."""
    mismatches = [problem for problem in row["problems"] if event_type in problem]
    verdict = "MISMATCH" if mismatches else "every good answer has its row"
    return (
        f"{row['audit_rows']:,} {event_type} rows for {row['ok']:,} good answers and at most "
        f"{row['unanswered']:,} requests wrk did not wait for: {verdict}"
    )


def describe_trail(trail: dict[str, Any]) -> str:
    if trail["valid"]:
        return (
            f"audit chain verifies: {trail['sealed']} events sealed ({trail['checkpoints']} "
            f"signed checkpoints, head seq {trail['head_seq']}), none left unsealed"
        )
    return f"audit chain does NOT verify or is incomplete: {json.dumps(trail)}"
