"""Audit durability under ``kill -9``: every token Echo Identity answered has its audit row.

Starts ``echo-identity serve --workers 2 --threads 8`` (production mode, SQLite, as
``token_endpoint.py`` does), sends ``POST /token`` (client_credentials, HTTP Basic) from 32
Python threads over keep-alive connections and keeps every access token answered with 200.
After ``--kill-after`` seconds it sends SIGKILL to the server's whole process group, in the
middle of the load, waits until no process of the group is left, and then reads the database
(sqlite3) as the crash left it: for each answered token there must be an ``oauth.token.issued``
row whose ``token_fingerprint`` is ``echo_identity.crypto.digests.fingerprint(token)``.

Each run prints answered / found / missing, and how many requests the kill cut off (a kill that
cut none off proved little, and is flagged). ``--runs N`` repeats it on the same database, so
later runs also start on a database left by a crash. At the end one worker pass seals the trail
(seal grace 0) and ``echo-identity audit verify`` must report an intact chain.

    .venv/bin/python benchmarks/audit_durability.py [--runs 3] [--kill-after 1.5] \
        [--clients 32] [--workers 2] [--threads 8] [--json]

Exits with status 2 when an answered token has no audit row, when a request failed before the
kill, when a run answered nothing or when the chain does not verify; 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from echo_identity.crypto.digests import fingerprint

from audit_checks import ISSUED_EVENT, describe_trail, seal_and_verify_trail  # isort: skip
from command_line import exit_with  # isort: skip
from harness import (  # isort: skip
    HOST,
    Target,
    form_headers,
    free_port,
    group_members,
    machine,
    server,
    wait_ready,
)
from targets import (  # isort: skip
    GRANT_BODY,
    echo_database,
    echo_environment,
    echo_serve_argv,
    prepare_echo,
)

GROUP_GONE_TIMEOUT = 30.0


@dataclass
class Outcome:
    """What the client threads saw in one run."""

    tokens: list[str] = field(default_factory=list)  # answered with 200
    other_statuses: dict[int, int] = field(default_factory=dict)  # before the kill
    failed_before_kill: list[str] = field(default_factory=list)
    cut_off: int = 0  # requests that failed once the kill was sent
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class RunReport:
    run: int
    answered: int
    found: int
    missing: int
    cut_off_by_kill: int
    seconds_before_kill: float
    other_statuses: dict[int, int]
    failed_before_kill: list[str]
    missing_fingerprints: list[str]

    @property
    def valid(self) -> bool:
        return (
            self.missing == 0
            and self.answered > 0
            and not self.other_statuses
            and not self.failed_before_kill
        )


def client_thread(target: Target, outcome: Outcome, killed: threading.Event) -> None:
    """Send token requests on one keep-alive connection until one fails."""
    headers = form_headers(target.authorization)
    connection = http.client.HTTPConnection(HOST, target.port, timeout=30)
    try:
        while True:
            try:
                connection.request("POST", "/token", body=GRANT_BODY, headers=headers)
                response = connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as error:
                with outcome.lock:
                    if killed.is_set():
                        outcome.cut_off += 1
                    else:
                        outcome.failed_before_kill.append(repr(error))
                return
            with outcome.lock:
                if response.status == 200:
                    outcome.tokens.append(json.loads(raw)["access_token"])
                else:
                    statuses = outcome.other_statuses
                    statuses[response.status] = statuses.get(response.status, 0) + 1
    finally:
        connection.close()


def kill_group(leader: int) -> None:
    """SIGKILL the process group led by ``leader`` and wait until none of it is left."""
    os.killpg(leader, signal.SIGKILL)
    deadline = time.monotonic() + GROUP_GONE_TIMEOUT
    while group_members(leader):
        if time.monotonic() > deadline:
            raise SystemExit(f"processes of group {leader} survived SIGKILL")
        time.sleep(0.05)


def tokens_without_row(database: Path, tokens: list[str]) -> list[str]:
    """The fingerprints of ``tokens`` that no ``oauth.token.issued`` row in ``database``
    (opened read-only, as the crash left it) carries."""
    uri = f"{database.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as connection:
        rows = connection.execute(
            "SELECT token_fingerprint FROM audit_events WHERE event_type = ?", (ISSUED_EVENT,)
        ).fetchall()
    found = {row[0] for row in rows}
    return [fingerprint(token) for token in tokens if fingerprint(token) not in found]


def one_run(
    number: int,
    folder: Path,
    env: dict[str, str],
    client: tuple[str, str],
    args: argparse.Namespace,
) -> RunReport:
    port = free_port()
    log = folder / f"echo-run-{number}.log"
    outcome, killed = Outcome(), threading.Event()
    argv = echo_serve_argv(port, args.workers, args.threads)
    with server(argv, env=env, cwd=folder, log=log) as process:
        wait_ready(port, "/readyz", log)
        target = Target("echo", port, *client, description=" ".join(argv[1:]))
        threads = [
            threading.Thread(target=client_thread, args=(target, outcome, killed), daemon=True)
            for _ in range(args.clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(args.kill_after)
        while not outcome.tokens and time.monotonic() - started < 30:
            time.sleep(0.05)  # not one answer yet: a kill now would prove nothing
        killed.set()
        seconds = time.monotonic() - started
        kill_group(process.pid)
        for thread in threads:
            thread.join(timeout=60)
            if thread.is_alive():
                raise SystemExit("a client thread did not finish after the kill")
    database = echo_database(folder)
    if isinstance(database, str):  # tests/process/test_audit_durability.py covers PostgreSQL
        raise SystemExit("audit_durability.py checks SQLite; unset BENCH_ECHO_POSTGRES_URL")
    missing = tokens_without_row(database, outcome.tokens)
    return RunReport(
        run=number,
        answered=len(outcome.tokens),
        found=len(outcome.tokens) - len(missing),
        missing=len(missing),
        cut_off_by_kill=outcome.cut_off,
        seconds_before_kill=round(seconds, 2),
        other_statuses=outcome.other_statuses,
        failed_before_kill=outcome.failed_before_kill[:10],
        missing_fingerprints=missing[:20],
    )


def print_run(report: RunReport) -> None:
    flags = []
    if report.missing:
        flags.append(f"MISSING rows for {report.missing_fingerprints}")
    if report.other_statuses:
        flags.append(f"non-200 answers before the kill {report.other_statuses}")
    if report.failed_before_kill:
        flags.append(f"requests failed before the kill: {report.failed_before_kill}")
    if report.answered == 0:
        flags.append("no token answered before the kill")
    if report.cut_off_by_kill == 0:
        flags.append("the kill cut off no request in flight")
    print(
        f"  run {report.run}: killed after {report.seconds_before_kill:.2f} s; "
        f"answered {report.answered}, found {report.found}, missing {report.missing}; "
        f"{report.cut_off_by_kill} requests cut off by the kill"
        + "".join(f"\n    {flag}" for flag in flags),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1, help="kill -9 runs on one database")
    parser.add_argument(
        "--kill-after", type=float, default=1.5, help="seconds of load before the kill"
    )
    parser.add_argument("--clients", type=int, default=32, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="serve --workers")
    parser.add_argument("--threads", type=int, default=8, help="serve --threads")
    parser.add_argument(
        "--echo-log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: Echo's default level",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be between 1 and 50")
    if min(args.clients, args.workers, args.threads) < 1 or not 0 < args.kill_after <= 60:
        parser.error("--clients, --workers, --threads must be positive; --kill-after in (0, 60]")

    work = Path(tempfile.mkdtemp(prefix="echo-audit-durability-"))
    try:
        env = echo_environment(work, args.echo_log_level)
        client = prepare_echo(work, env)
        reports = []
        for number in range(1, args.runs + 1):
            reports.append(one_run(number, work, env, client, args))
            if not args.json:
                print_run(reports[-1])
        trail = seal_and_verify_trail(work, env)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    result: dict[str, Any] = {
        "benchmark": "audit_durability",
        "machine": machine(),
        "server": f"echo-identity serve --workers {args.workers} --threads {args.threads}",
        "clients": args.clients,
        "kill_after_s": args.kill_after,
        "answered": sum(r.answered for r in reports),
        "found": sum(r.found for r in reports),
        "missing": sum(r.missing for r in reports),
        "audit_trail": trail,
        "valid": all(r.valid for r in reports) and trail["valid"],
        "runs": [asdict(r) for r in reports],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"audit durability, {args.runs} kill -9 runs ({result['server']}, "
            f"{args.clients} client threads): answered {result['answered']}, "
            f"found {result['found']}, missing {result['missing']}"
        )
        print(f"  {describe_trail(trail)}")
        if not result["valid"]:
            print("  FAILED: see the runs above")
    return 0 if result["valid"] else 2


if __name__ == "__main__":
    exit_with(main)
