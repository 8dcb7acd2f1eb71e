"""Time ``echo-identity report`` over one million audit events (the ceiling is 10 s).

A fresh database is migrated and filled, by bulk inserts that bypass the ORM, with N audit
events spread over the last seven days in a realistic mix (token issuance dominates, then vault
reads, sign-ins, refreshes, failures, lock-outs, clean-ups; 50 clients, 2,000 source IPs with a
skewed distribution, browser user agents, request ids, token fingerprints, small details), plus
alerts, signing keys, data keys and vault connections for the other sections. Filling is not
timed.

Each run is the real command in a fresh process —
``echo-identity report --since 8d --format FORMAT --out FILE --json`` — so the time includes
interpreter start-up, the SQL aggregates and rendering. It also times, in process, one
collection of the database-backed ``/metrics`` counters (``metrics_scrape_seconds``). The
result is the median wall time of the runs; the script exits with status 1 when it is 10 s or
more, or when the report does not count every event.

    .venv/bin/python benchmarks/audit_report.py [--events 1000000] [--runs 3] [--format json]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test] [--json]

Without ``--database-url`` the database is a temporary SQLite file. With one, every table
lives in a throwaway schema that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import sqlalchemy
from sqlalchemy import Table, insert

from echo_identity.audit.alert_models import Alert
from echo_identity.audit.counters import AuditCounters
from echo_identity.db import Database, utcnow
from echo_identity.idp.models import SigningKey
from echo_identity.keys.models import DataKey
from echo_identity.vault.models import Connection, Provider

# Shared with the other benchmarks (this directory is on sys.path when a script in it runs).
from scratch_database import add_users, database_at  # isort: skip

CEILING = 10.0  # seconds
CHUNK = 50_000
BIN = Path(sys.executable).parent
# (event type, outcome, share of all events, carries a client id)
MIX = [
    ("oauth.token.issued", "success", 0.34, True),
    ("vault.token.read", "success", 0.22, True),
    ("auth.login.success", "success", 0.10, False),
    ("oauth.token.refreshed", "success", 0.09, True),
    ("oauth.code.issued", "success", 0.08, True),
    ("auth.login.failure", "failure", 0.05, False),
    ("oauth.token.failed", "failure", 0.03, True),
    ("oauth.token.verified", "success", 0.03, True),
    ("vault.token.denied", "failure", 0.01, True),
    ("vault.token.expired", "success", 0.01, True),
    ("auth.logout", "success", 0.02, False),
    ("oauth.token.revoked", "success", 0.01, True),
    ("auth.login.locked", "failure", 0.005, False),
    ("vault.token.refreshed", "success", 0.005, True),
]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "python-httpx/0.28.1",
    "okhttp/4.12.0",
]


def event_rows(count: int, now: datetime, seed: int = 5) -> Iterator[tuple[Any, ...]]:
    """``count`` events over the last seven days, oldest first, as driver-level tuples."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    types = list(MIX)
    weights = [entry[2] for entry in MIX]
    clients = [f"client-{n:02d}" for n in range(50)]
    client_weights = [1 / (n + 1) for n in range(50)]
    ips = [f"10.{n // 250}.{n % 250}.{(n * 7) % 250 + 1}" for n in range(2000)]
    ip_weights = [1 / (n + 1) ** 0.8 for n in range(2000)]
    span = timedelta(days=7).total_seconds()
    start = now - timedelta(days=7)
    for index in range(count):
        event_type, outcome, _share, has_client = rng.choices(types, weights)[0]
        moment = start + timedelta(seconds=span * index / count)
        yield (
            moment,
            event_type,
            outcome,
            "warning" if outcome == "failure" else "info",
            None,
            f"p-{rng.getrandbits(40):010x}" if not has_client else None,
            rng.choices(clients, client_weights)[0] if has_client else None,
            rng.choices(ips, ip_weights)[0],
            rng.choice(AGENTS),
            f"{rng.getrandbits(64):016x}",
            f"{rng.getrandbits(48):012x}" if has_client else None,
            '{"provider": "github"}' if event_type.startswith("vault") else "{}",
        )


COLUMNS = (
    "occurred_at, event_type, outcome, severity, actor, subject, client_id, ip, user_agent,"
    " request_id, token_fingerprint, details"
)


def fill_events(database: Database, count: int) -> None:
    """Bulk-insert ``count`` events: ``executemany`` on SQLite, ``COPY`` on PostgreSQL."""
    now = utcnow()
    rows = event_rows(count, now)
    raw = database.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if database.dialect == "sqlite":
            cursor.execute("BEGIN")
            values = ", ".join("?" * 12)
            statement = f"INSERT INTO audit_events ({COLUMNS}) VALUES ({values})"  # noqa: S608
            while batch := [
                (row[0].strftime("%Y-%m-%d %H:%M:%S.%f"), *row[1:])
                for row in itertools.islice(rows, CHUNK)
            ]:
                cursor.executemany(statement, batch)
            cursor.execute("COMMIT")
        else:
            with cursor.copy(f"COPY audit_events ({COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            raw.commit()
            cursor.execute("ANALYZE audit_events")
            raw.commit()
    finally:
        raw.close()


def fill_state(database: Database) -> None:
    """Alerts, signing keys, data keys and connections for the report's other sections."""
    now = utcnow()
    rng = random.Random(7)  # noqa: S311 - reproducible test data, not secrets
    rules = ["login_failures", "password_spraying", "vault_denials", "new_ip_prefix"]
    with database.transaction() as session:
        session.execute(
            insert(cast(Table, Alert.__table__)),
            [
                {
                    "created_at": now - timedelta(minutes=rng.randrange(7 * 24 * 60)),
                    "last_seen_at": now,
                    "rule": rng.choice(rules),
                    "severity": rng.choice(["warning", "high"]),
                    "key": f"k{n}",
                    "summary": "benchmark alert",
                    "evidence": [n],
                    "occurrences": rng.randrange(1, 5),
                }
                for n in range(2000)
            ],
        )
        for alg, days in (("RS256", 120), ("ES256", 30), ("EdDSA", 10)):
            session.execute(
                insert(cast(Table, SigningKey.__table__)),
                {
                    "kid": secrets.token_hex(16),
                    "alg": alg,
                    "public_jwk": {"kty": "EC"},
                    "private_key_ciphertext": b"x",
                    "created_at": now - timedelta(days=days),
                    "activates_at": now - timedelta(days=days),
                },
            )
        add_users(session, 1000, now)
        session.execute(
            insert(cast(Table, DataKey.__table__)),
            [
                {
                    "id": secrets.token_hex(16),
                    "owner": f"user:{n}",
                    "kek_id": "local:" + ("a" * 16 if n % 3 else "b" * 16),
                    "wrapped_key": b"x",
                    "created_at": now - timedelta(days=rng.randrange(500)),
                }
                for n in range(1, 1001)
            ],
        )
        session.execute(
            insert(cast(Table, Provider.__table__)),
            [
                {
                    "id": n,
                    "name": f"provider{n}",
                    "authorize_url": "https://example.org/authorize",
                    "token_url": "https://example.org/token",
                    "client_id": f"client{n}",
                    "client_secret_ciphertext": b"x",
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(1, 6)
            ],
        )
        session.execute(
            insert(cast(Table, Connection.__table__)),
            [
                {
                    "user_id": n // 5 + 1,
                    "provider_id": n % 5 + 1,
                    "status": "needs_reauth" if n % 50 == 0 else "active",
                    "created_at": now,
                    "updated_at": now - timedelta(hours=n % 100),
                }
                for n in range(5000)
            ],
        )


def environment(database: Database, var_dir: Path) -> dict[str, str]:
    """ECHO_* variables for the CLI against ``database`` (development mode: no secrets needed)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ECHO_")}
    return {
        **base,
        "ECHO_DEV_MODE": "1",
        "ECHO_VAR_DIR": str(var_dir),
        "ECHO_DATABASE_URL": database.engine.url.render_as_string(hide_password=False),
        "ECHO_SECRET_KEY": secrets.token_urlsafe(48),
        "ECHO_VAULT_KEK": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "ECHO_LOG_LEVEL": "WARNING",
    }


def run_report(env: dict[str, str], fmt: str, out: Path) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [
            str(BIN / "echo-identity"),
            "report",
            "--since",
            "8d",
            "--format",
            fmt,
            "--out",
            str(out),
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"report failed: {result.stdout}{result.stderr}")
    summary: dict[str, Any] = json.loads(result.stdout)
    return elapsed, summary


def time_scrape(database: Database) -> float:
    """Seconds for one ``/metrics`` collection of the database-backed counters (in process)."""
    started = time.perf_counter()
    families = list(AuditCounters(database).collect())
    elapsed = time.perf_counter() - started
    assert families
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--format", choices=["json", "html"], default="json")
    parser.add_argument("--database-url")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with database_at(args.database_url, "audit") as database, tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        fill_events(database, args.events)
        fill_state(database)
        fill_seconds = time.perf_counter() - started
        env = environment(database, Path(work) / "var")
        out = Path(work) / f"report.{args.format}"
        runs = [run_report(env, args.format, out) for _ in range(args.runs)]
        size = out.stat().st_size
        scrape = [time_scrape(database) for _ in range(args.runs)]
    seconds = [elapsed for elapsed, _ in runs]
    median = statistics.median(seconds)
    counted = runs[-1][1]["total_events"]
    result = {
        "benchmark": "audit_report",
        "database": "sqlite" if args.database_url is None else "postgresql",
        "events": args.events,
        "format": args.format,
        "fill_seconds": round(fill_seconds, 2),
        "runs_seconds": [round(s, 3) for s in seconds],
        "in_process_seconds": [summary["seconds"] for _, summary in runs],
        "median_seconds": round(median, 3),
        "ceiling_seconds": CEILING,
        "events_counted": counted,
        "metrics_scrape_seconds": [round(s, 3) for s in scrape],
        "report_bytes": size,
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "cpus": os.cpu_count(),
    }
    passed = median < CEILING and counted == args.events
    if args.json:
        print(json.dumps({**result, "passed": passed}))
    else:
        buffer = io.StringIO()
        for key, value in result.items():
            print(f"{key:>20}: {value}", file=buffer)
        print(buffer.getvalue() + ("PASS" if passed else "FAIL"))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
