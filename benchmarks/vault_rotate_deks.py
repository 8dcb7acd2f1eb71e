"""Throughput of online DEK rotation (``keys.rotation.rotate_deks``) over a full vault.

A fresh database is migrated and filled with N vault connections spread over U users. Each
connection holds a 200-byte access token and a 200-byte refresh token, encrypted as the vault
stores them. The run then rotates the DEKs R times; each rotation runs phase 1 (new DEK per
owner), phase 2 (re-encrypt everything, in batches) and phase 3 (delete the old DEKs) and
re-encrypts every ciphertext. A *record* is one re-encrypted ciphertext, so a rotation of N
connections re-encrypts 2N records (plus the system's provider secrets). The result is the
median rate over the rotations; the floor is 50,000 records/s.

The in-run peer is cryptography's raw ``AESGCM`` decrypt plus encrypt of the same 200 bytes,
with the cipher built once. This is the crypto alone, without headers, database or Python
bookkeeping, so ``ratio`` (rotation / raw) shows the overhead whatever the machine's speed.

    .venv/bin/python benchmarks/vault_rotate_deks.py [--rows 100000] [--users 1000] [--runs 3]
        [--batch-size 1000] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--json]

Without ``--database-url`` the database is a temporary SQLite file. With one, every table
lives in a throwaway schema that is dropped afterwards. Exits with status 1 when the median
rate is below the floor.

The machine may be shared: before each rotation the script waits (``--quiet-wait``, seconds)
until other processes use under 10% of the CPUs, and it records what they used during each
run (``others_cpu_pct``, share of all CPUs). This benchmark's own PostgreSQL backends do not
count as others; the server's background processes (WAL writer, checkpointer, autovacuum),
which this run's writes keep busy, are reported apart (``pg_background_cpu_pct``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cryptography
import sqlalchemy
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import insert, select, text

from echo_identity.crypto import aead
from echo_identity.crypto.kek import LocalKekProvider
from echo_identity.db import Database, utcnow
from echo_identity.keys.keyring import Keyring
from echo_identity.keys.models import DataKey
from echo_identity.keys.rotation import DEFAULT_BATCH_SIZE, rotate_deks
from echo_identity.schema import ENCRYPTED_COLUMNS
from echo_identity.vault.models import (
    ACCESS_TOKEN,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    Connection,
    Provider,
)

# Shared with the other benchmarks (this directory is on sys.path when a script in it runs):
# the scratch database, and the HTTP benchmarks' CPU ticks and wait for a quiet machine.
from scratch_database import add_users, database_at  # isort: skip
from harness import BUSY_WARNING, cpu_ticks_by_process, wait_for_quiet  # isort: skip

FLOOR = 50_000  # re-encrypted records per second
TOKEN_BYTES = 200
FILL_CHUNK = 5_000
APPLICATION_NAME = f"echo_rotate_bench_{os.getpid()}"  # finds this run's PostgreSQL backends
PG_BACKGROUND = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum",
    "logical replication",
    "archiver",
    "stats",
)


def fill(database: Database, keks: LocalKekProvider, rows: int, users: int) -> None:
    """``users`` users and ``rows`` connections spread over them. Each user has one
    connection per provider, so there are ceil(rows / users) providers. Every token is
    encrypted by the Keyring with the vault's contexts."""
    providers = -(-rows // users)
    now = utcnow()
    with database.transaction() as session:
        add_users(session, users, now)
        keyring = Keyring(session, keks)
        for n in range(1, providers + 1):
            session.execute(
                insert(Provider),
                {
                    "id": n,
                    "name": f"provider{n}",
                    "authorize_url": "https://example.org/authorize",
                    "token_url": "https://example.org/token",
                    "client_id": f"client{n}",
                    "client_secret_ciphertext": keyring.encrypt(
                        CLIENT_SECRET.owner_for(),
                        secrets.token_bytes(32),
                        CLIENT_SECRET.context_for(n),
                    ),
                },
            )
    for start in range(1, rows + 1, FILL_CHUNK):
        with database.transaction() as session:
            owners = Keyring(session, keks).encryptors(
                {
                    ACCESS_TOKEN.owner_for((n - 1) % users + 1)
                    for n in range(start, start + FILL_CHUNK)
                }
            )
            batch = []
            for n in range(start, min(start + FILL_CHUNK, rows + 1)):
                user_id, provider_id = (n - 1) % users + 1, (n - 1) // users + 1
                encryptor = owners[ACCESS_TOKEN.owner_for(user_id)]
                batch.append(
                    {
                        "id": n,
                        "user_id": user_id,
                        "provider_id": provider_id,
                        "access_token_ciphertext": encryptor.encrypt(
                            secrets.token_bytes(TOKEN_BYTES), ACCESS_TOKEN.context_for(n)
                        ),
                        "refresh_token_ciphertext": encryptor.encrypt(
                            secrets.token_bytes(TOKEN_BYTES), REFRESH_TOKEN.context_for(n)
                        ),
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            session.execute(insert(Connection), batch)


def is_pg_background(pid: int) -> bool:
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if not title.startswith("postgres: "):
        return False
    # "postgres: checkpointer", or with a cluster name "postgres: 15/main: checkpointer"
    role = title.removeprefix("postgres: ")
    return role.startswith(PG_BACKGROUND) or role.partition(": ")[2].startswith(PG_BACKGROUND)


def cpu_shares(
    before: dict[int, tuple[int, int]], seconds: float, ours: set[int]
) -> tuple[float, float]:
    """Shares of all CPUs (percent) that other processes, and PostgreSQL's background
    processes, used since ``before``. This process group and the pids ``ours`` are left out."""
    others = background = 0
    for pid, (group, ticks) in cpu_ticks_by_process().items():
        used = ticks - before.get(pid, (group, 0))[1]
        if not used or group == os.getpgrp() or pid in ours:
            continue
        if is_pg_background(pid):
            background += used
        else:
            others += used
    capacity = seconds * (os.cpu_count() or 1) * os.sysconf("SC_CLK_TCK")
    return round(100 * others / capacity, 1), round(100 * background / capacity, 1)


def our_backends(database: Database) -> set[int]:
    """The pids of this run's PostgreSQL backends (empty on SQLite)."""
    if database.dialect != "postgresql":
        return set()
    with database.engine.connect() as connection:
        return set(
            connection.scalars(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": APPLICATION_NAME},
            )
        )


def rotation_rates(
    database: Database, keks: LocalKekProvider, runs: int, batch_size: int, quiet_wait: float
) -> list[dict[str, Any]]:
    """Rotate ``runs`` times; each run's records, seconds, records/s and the CPU share other
    processes used meanwhile."""
    results = []
    for _ in range(runs):
        ours = our_backends(database)
        before_run = wait_for_quiet(quiet_wait)
        with database.session() as session:
            ticks = cpu_ticks_by_process()
            started = time.perf_counter()
            report = rotate_deks(
                session, Keyring(session, keks), ENCRYPTED_COLUMNS, batch_size=batch_size
            )
            seconds = time.perf_counter() - started
        others, background = cpu_shares(ticks, seconds, ours | our_backends(database))
        if report.failures or report.resumed or report.changed_concurrently:
            raise SystemExit(f"rotation did not run cleanly: {report}")
        results.append(
            {
                "records": report.reencrypted,
                "new_data_keys": report.new_data_keys,
                "deleted_data_keys": report.deleted_data_keys,
                "seconds": round(seconds, 3),
                "records_per_s": round(report.reencrypted / seconds),
                "others_cpu_pct_before": before_run,
                "others_cpu_pct": others,
                "pg_background_cpu_pct": background,
            }
        )
    return results


def check_all_rotated(database: Database, keks: LocalKekProvider) -> None:
    """Every ciphertext is under a current DEK and decrypts; no retired DEK is left."""
    with database.session() as session:
        keyring = Keyring(session, keks)
        current = set(session.scalars(select(DataKey.id).where(DataKey.retired_at.is_(None))))
        if session.scalar(select(DataKey.id).where(DataKey.retired_at.is_not(None))):
            raise SystemExit("a retired DEK survived the rotation")
        for row in session.execute(
            select(Connection.id, Connection.refresh_token_ciphertext).limit(1000)
        ):
            ciphertext = row.refresh_token_ciphertext
            if aead.key_id_of(ciphertext) not in current:
                raise SystemExit(f"connection {row.id} is not under a current DEK")
            keyring.decrypt(ciphertext, f"connection:{row.id}:refresh_token")


def raw_aesgcm_rate(count: int) -> float:
    """Raw AES-GCM decrypt + encrypt pairs per second on 200-byte tokens (cipher built once)."""
    cipher = AESGCM(secrets.token_bytes(aead.KEY_SIZE))
    associated_data = b"\x01\x20" + b"k" * 32 + b"connection:42:refresh_token"
    nonces = [os.urandom(aead.NONCE_SIZE) for _ in range(count)]
    ciphertexts = [
        cipher.encrypt(nonce, secrets.token_bytes(TOKEN_BYTES), associated_data) for nonce in nonces
    ]
    started = time.perf_counter()
    for nonce, ciphertext in zip(nonces, ciphertexts, strict=True):
        plaintext = cipher.decrypt(nonce, ciphertext, associated_data)
        cipher.encrypt(os.urandom(aead.NONCE_SIZE), plaintext, associated_data)
    return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000, help="vault connections")
    parser.add_argument("--users", type=int, default=1_000, help="users (one DEK each)")
    parser.add_argument("--runs", type=int, default=3, help="rotations; the median is reported")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL URL (default: a temporary SQLite file)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="seconds to wait before each run for other processes to go quiet",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if min(args.rows, args.users, args.runs, args.batch_size) < 1:
        parser.error("--rows, --users, --runs and --batch-size must be positive")

    keks = LocalKekProvider([secrets.token_bytes(aead.KEY_SIZE)])
    with database_at(args.database_url, "vault", APPLICATION_NAME) as database:
        started = time.perf_counter()
        fill(database, keks, args.rows, args.users)
        fill_seconds = time.perf_counter() - started
        runs = rotation_rates(database, keks, args.runs, args.batch_size, args.quiet_wait)
        check_all_rotated(database, keks)
        engine = database.dialect
    median = statistics.median(run["records_per_s"] for run in runs)
    raw = raw_aesgcm_rate(min(args.rows * 2, 200_000))
    result: dict[str, Any] = {
        "benchmark": "vault_rotate_deks",
        "database": engine,
        "rows": args.rows,
        "users": args.users,
        "encrypted_fields": len(ENCRYPTED_COLUMNS),
        "token_bytes": TOKEN_BYTES,
        "batch_size": args.batch_size,
        "fill_seconds": round(fill_seconds, 1),
        "runs": runs,
        "records_per_s": round(median),
        "raw_aesgcm_pairs_per_s": round(raw),
        "ratio_rotation_to_raw": round(median / raw, 3),
        "floor_records_per_s": FLOOR,
        "meets_floor": median >= FLOOR,
        "quiet_machine": all(run["others_cpu_pct"] <= BUSY_WARNING for run in runs),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "sqlalchemy": sqlalchemy.__version__,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verdict = "meets" if result["meets_floor"] else "BELOW"
        records = runs[0]["records"]
        print(
            f"DEK rotation on {engine}, {args.rows:,} connections / {args.users:,} users "
            f"({records:,} records), batch {args.batch_size:,}, median of {args.runs}:"
        )
        for run in runs:
            print(
                f"  run          {run['records_per_s']:>10,} records/s  ({run['seconds']} s; "
                f"others {run['others_cpu_pct']}% CPU, postgres background "
                f"{run['pg_background_cpu_pct']}%)"
            )
        print(
            f"  rotation     {result['records_per_s']:>10,} records/s  "
            f"({verdict} the floor of {FLOOR:,}/s)"
        )
        print(
            f"  raw AESGCM   {result['raw_aesgcm_pairs_per_s']:>10,} decrypt+encrypt/s  "
            "(in-run peer)"
        )
        print(f"  ratio        {result['ratio_rotation_to_raw']:>10} (rotation / raw)")
        if not result["quiet_machine"]:
            print(f"  WARNING: other processes used over {BUSY_WARNING:.0f}% of the CPUs in a run")
    return 0 if result["meets_floor"] else 1


if __name__ == "__main__":
    sys.exit(main())
