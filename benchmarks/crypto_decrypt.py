"""Decrypt throughput of the envelope format (``crypto.aead.decrypt``) on one core.

A 200-byte token, encrypted as the vault stores it (32-hex DEK id, row-and-field context), is
decrypted N times per run; the result is the median of the runs. The floor is 100,000
decrypts/s. The in-run peer is cryptography's raw ``AESGCM.decrypt`` on the same bytes with a
cipher built once, so ``ratio`` (envelope / raw) shows what parsing the header, building the
cipher per call and binding the context cost, independent of the machine's speed.

    .venv/bin/python benchmarks/crypto_decrypt.py [--count N] [--runs 5] [--cpu K] [--json]

Exits with status 1 when the envelope's median rate is below the floor.
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
from collections.abc import Callable
from typing import Any

import cryptography
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from echo_identity.crypto import aead

FLOOR = 100_000  # decrypts per second
TOKEN_BYTES = 200
CONTEXT = "connection:42:refresh_token"


def pin_to_one_cpu(cpu: int | None) -> int | None:
    """Pin this process to ``cpu`` (default: the first CPU it may run on); the CPU used, or
    ``None`` where the platform cannot pin."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    chosen = cpu if cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {chosen})
    return chosen


def rate(operation: Callable[[], object], count: int) -> float:
    """Calls of ``operation`` per second over ``count`` calls."""
    started = time.perf_counter()
    for _ in range(count):
        operation()
    return count / (time.perf_counter() - started)


def median_rate(
    operation: Callable[[], object], count: int, runs: int
) -> tuple[float, list[float]]:
    """The median rate of ``runs`` timed runs after one warm-up run, and every run's rate."""
    rate(operation, max(count // 10, 1))
    rates = [rate(operation, count) for _ in range(runs)]
    return statistics.median(rates), rates


def measure(count: int, runs: int) -> dict[str, Any]:
    """Envelope and raw AES-GCM decrypt rates for a 200-byte token."""
    key = secrets.token_bytes(aead.KEY_SIZE)
    key_id = secrets.token_hex(16)
    token = secrets.token_bytes(TOKEN_BYTES)
    ciphertext = aead.encrypt(key, key_id, token, CONTEXT)

    header_length = 2 + len(key_id) + aead.NONCE_SIZE
    header, body = ciphertext[:header_length], ciphertext[header_length:]
    nonce, associated_data = header[-aead.NONCE_SIZE :], header + CONTEXT.encode()
    cipher = AESGCM(key)
    if aead.decrypt(key, ciphertext, CONTEXT) != token:
        raise SystemExit("envelope decrypt returned the wrong plaintext")
    if cipher.decrypt(nonce, body, associated_data) != token:
        raise SystemExit("raw AESGCM decrypt returned the wrong plaintext")

    envelope, envelope_runs = median_rate(
        lambda: aead.decrypt(key, ciphertext, CONTEXT), count, runs
    )
    raw, raw_runs = median_rate(lambda: cipher.decrypt(nonce, body, associated_data), count, runs)
    return {
        "aead_decrypts_per_s": round(envelope),
        "aead_runs_per_s": [round(value) for value in envelope_runs],
        "raw_aesgcm_decrypts_per_s": round(raw),
        "raw_aesgcm_runs_per_s": [round(value) for value in raw_runs],
        "ratio_aead_to_raw": round(envelope / raw, 3),
        "floor_decrypts_per_s": FLOOR,
        "meets_floor": envelope >= FLOOR,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200_000, help="decrypts per run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: first)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.count < 1 or args.runs < 1:
        parser.error("--count and --runs must be positive")

    cpu = pin_to_one_cpu(args.cpu)
    result: dict[str, Any] = {
        "benchmark": "crypto_decrypt",
        "token_bytes": TOKEN_BYTES,
        "count": args.count,
        "runs": args.runs,
        "cpu": cpu,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        **measure(args.count, args.runs),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verdict = "meets" if result["meets_floor"] else "BELOW"
        print(
            f"aead.decrypt, {TOKEN_BYTES}-byte token, CPU {cpu}, median of {args.runs} x "
            f"{args.count:,}:"
        )
        print(
            f"  envelope     {result['aead_decrypts_per_s']:>12,} decrypts/s  "
            f"({verdict} the floor of {FLOOR:,}/s)"
        )
        print(
            f"  raw AESGCM   {result['raw_aesgcm_decrypts_per_s']:>12,} decrypts/s  (in-run peer)"
        )
        print(f"  ratio        {result['ratio_aead_to_raw']:>12} (envelope / raw)")
    return 0 if result["meets_floor"] else 1


if __name__ == "__main__":
    sys.exit(main())
