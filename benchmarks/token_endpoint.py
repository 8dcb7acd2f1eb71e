"""Token endpoint throughput: Echo Identity against node-oidc-provider on this machine.

Both servers run on loopback and are loaded by wrk with the same request: ``POST /token``,
HTTP Basic client authentication, ``grant_type=client_credentials&scope=api:read``. Each answers
with an ES256-signed RFC 9068 JWT access token; one token from each is fetched and checked against
the server's JWKS before anything is measured, and wrk checks every answer (a 200 with an
``access_token``). Echo also looks up the client in its database and writes one audit row to
SQLite per token; node-oidc-provider stores nothing for JWT access tokens.

Runs alternate (echo, node, echo, node, ...); the report gives each server's median requests/s
and median p99 latency over the rounds, and the ratio of the medians (Echo / node). The bar
(issue 12): Echo at least 0.7x node's requests/s with a median p99 at most 1.5x node's; the goal
stays 1.5x node's requests/s. A run with any non-200 response, unexpected body or socket error
makes the result invalid. The machine may be shared: before each run the script waits
(``--quiet-wait``) until other processes use under 10% of the CPUs, and it records and flags
what they used during the run.

Every audit row is accounted for: after each Echo run (warm-up included) the script counts the
``oauth.token.issued`` rows the run wrote (Echo's SQLite database, opened read-only) and requires
one per token answered, and no more than requests sent; a mismatch makes the result invalid.
After the last run it seals the trail (``echo-identity worker --once``, seal grace 0) and requires
``echo-identity audit verify`` to report an intact chain with nothing left unsealed.

Echo runs in production mode with ``serve --workers 2`` and serve's default threads unless
``--echo-threads`` is given, at Echo's default log level unless ``--echo-log-level`` is given.

node-oidc-provider (npm ``oidc-provider``, latest) is installed into a temporary folder that is
removed afterwards; ``--node-modules DIR`` reuses an earlier install instead.

``--layers`` adds the stripped-down endpoints of ``stack_layers.py`` (bare WSGI, with SQLite,
Flask + Authlib, Authlib without Flask) to every round, on granian with Echo's worker settings:
how fast each layer of Echo's stack can go on this machine, next to Echo and node.

    .venv/bin/python benchmarks/token_endpoint.py [--rounds 3] [--duration 10] \
        [--connections 32] [--echo-workers 2] [--echo-threads N] [--node-processes 1] [--json]
    .venv/bin/python benchmarks/token_endpoint.py --sweep   # Echo alone, workers x threads
    .venv/bin/python benchmarks/token_endpoint.py --layers  # + stack_layers.py endpoints

Needs ``wrk`` (Debian: ``apt-get install wrk``), ``node`` and ``npm`` on PATH. Exits with status
1 when Echo is below the bar and 2 when a run saw errors or an audit check failed.
The machinery shared with the other HTTP benchmarks is in ``harness.py``, ``targets.py`` and
``audit_checks.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet

from stack_layers import LAYERS, prepare_database, signing_jwk, uses_database  # isort: skip
import audit_checks  # isort: skip
import command_line  # isort: skip
import harness  # isort: skip
import targets  # isort: skip

FLOOR = 0.7  # Echo's requests/s over node's, at least
P99_CEILING = 1.5  # Echo's median p99 over node's, at most
GOAL = 1.5
BODY = targets.GRANT_BODY
SWEEP_CONFIGS = ("1x1", "1x2", "1x4", "1x8", "2x1", "2x2", "2x4", "4x1")


# --- stack layers (stack_layers.py) -------------------------------------------------------


@contextmanager
def layer_server(
    folder: Path, layer: str, workers: int, threads: int | None
) -> Iterator[harness.Target]:
    """One of ``stack_layers.py``'s stripped-down token endpoints, on granian like Echo
    (``threads`` ``None``: granian's default blocking threads)."""
    client_id, client_secret = "bench", secrets.token_urlsafe(32)
    database = folder / f"{layer}.db"
    if uses_database(layer):
        prepare_database(str(database), client_id, client_secret)
    env = {
        "BENCH_LAYER": layer,
        "BENCH_ISSUER": harness.ISSUER,
        "BENCH_CLIENT_ID": client_id,
        "BENCH_CLIENT_SECRET": client_secret,
        "BENCH_JWK": json.dumps(signing_jwk()),
        "BENCH_DATABASE": str(database),
    }
    with targets.granian_server(
        "stack_layers:app",
        folder,
        env,
        workers=workers,
        threads=threads,
        ready_path="/.well-known/openid-configuration",
        log=folder / f"layer-{layer}.log",
    ) as (port, pgid):
        yield harness.Target(
            layer,
            port,
            client_id,
            client_secret,
            f"stack_layers.py {layer}, granian --workers {workers} "
            f"--blocking-threads {threads or 'default'}",
            pgid,
        )


# --- checks and load -----------------------------------------------------------------------


def check_token(target: harness.Target) -> dict[str, Any]:
    """Fetch one token and verify it is an ES256 ``at+jwt`` signed by the target's JWKS."""
    status, answer = targets.form_post(target, "/token", BODY)
    if status != 200:
        raise SystemExit(f"{target.name}: token request answered {status}: {answer}")
    token = answer["access_token"]
    jwks_path = targets.discovered_path(target, "jwks_uri")
    status, _, raw_jwks = harness.http_call(target.port, "GET", jwks_path)
    if status != 200:
        raise SystemExit(f"{target.name}: {jwks_path} answered {status}")
    decoded = jwt.decode(token, KeySet.import_key_set(json.loads(raw_jwks)), algorithms=["ES256"])
    header = dict(decoded.header)
    if header.get("alg") != "ES256" or header.get("typ") != "at+jwt":
        raise SystemExit(f"{target.name}: token header is {header}, wanted ES256 at+jwt")
    return {"header": header, "claims": dict(decoded.claims), "token_bytes": len(token)}


def parse_config(value: str) -> tuple[int, int]:
    """``"2x4"`` -> (2 workers, 4 threads)."""
    try:
        workers, threads = (int(part) for part in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not WORKERSxTHREADS") from None
    if workers < 1 or threads < 1:
        raise argparse.ArgumentTypeError("workers and threads must be positive")
    return workers, threads


# --- modes -----------------------------------------------------------------------------------


def compare(args: argparse.Namespace, wrk: str, work: Path) -> dict[str, Any]:
    """Echo against node-oidc-provider, alternating rounds; Echo's audit rows counted after
    each of its runs and its audit chain sealed and verified after the last."""
    options = command_line.load_options(args)
    with contextlib.ExitStack() as servers:
        peers = servers.enter_context(targets.echo_and_node(work, args))
        echo, node = peers.echo, peers.node
        layers = [
            servers.enter_context(
                layer_server(peers.echo_folder, layer, args.workers, args.threads)
            )
            for layer in args.layers
        ]
        loaded = (echo, node, *layers)

        def measure(target: harness.Target, number: int, duration: int) -> harness.Run:
            run = {**options, "round_number": number, "duration": duration}
            call = targets.token_call(target)
            if target is echo:
                return audit_checks.load_audited(
                    wrk, target, call, peers.database, audit_checks.ISSUED_EVENT, **run
                )
            return harness.load(wrk, target, call, **run)

        checks = {t.name: check_token(t) for t in loaded}
        warmups = [measure(t, 0, args.warmup) for t in loaded]  # discarded, but checked
        runs: list[harness.Run] = []
        for number in range(1, args.rounds + 1):
            for target in loaded:
                runs.append(measure(target, number, args.duration))
                harness.print_progress(runs[-1], args.json)
    # the servers have stopped
    trail = audit_checks.seal_and_verify_trail(peers.echo_folder, peers.echo_env)
    summary = {t.name: harness.summarise([r for r in runs if r.target == t.name]) for t in loaded}
    node_rate = summary["node"]["median_requests_per_s"]
    ratio = summary["echo"]["median_requests_per_s"] / node_rate
    p99_ratio = summary["echo"]["median_p99_ms"] / summary["node"]["median_p99_ms"]
    per_round = [
        round(e.requests_per_s / n.requests_per_s, 3)
        for e, n in zip(
            [r for r in runs if r.target == "echo"],
            [r for r in runs if r.target == "node"],
            strict=True,
        )
    ]
    return {
        "benchmark": "token_endpoint",
        "machine": harness.machine(),
        "oidc_provider": peers.node_version,
        "load": {**command_line.load_report(args), "body": BODY},
        "echo": {
            "config": echo.description,
            "log_level": args.log_level or "Echo's default",
            **summary["echo"],
        },
        "node": {"config": node.description, **summary["node"]},
        "layers": {
            t.name: {
                "config": t.description,
                **summary[t.name],
                "ratio_to_node": round(summary[t.name]["median_requests_per_s"] / node_rate, 3),
            }
            for t in layers
        },
        "ratio_echo_to_node": round(ratio, 3),
        "ratio_per_round": per_round,
        "p99_echo_to_node": round(p99_ratio, 2),
        "floor": FLOOR,
        "p99_ceiling": P99_CEILING,
        "goal": GOAL,
        "meets_floor": ratio >= FLOOR and p99_ratio <= P99_CEILING,
        "meets_goal": ratio >= GOAL,
        "audit_trail": trail,
        "token_checks": checks,
        **harness.runs_report(warmups, runs, checks_pass=trail["valid"]),
    }


def sweep(args: argparse.Namespace, wrk: str, work: Path) -> dict[str, Any]:
    """Echo alone under each workers x threads configuration, ``rounds`` runs each; the audit
    rows counted after every run and the chain sealed and verified at the end."""
    env = targets.echo_environment(work, args.log_level)
    client = targets.prepare_echo(work, env)
    database = targets.echo_database(work)
    options = command_line.load_options(args)
    rows = []
    runs: list[harness.Run] = []
    for workers, threads in args.configs:
        with targets.echo_server(work, env, client, workers, threads) as echo:
            check_token(echo)
            these = [  # round 0 is the warm-up: checked, left out of the medians
                audit_checks.load_audited(
                    wrk,
                    echo,
                    targets.token_call(echo),
                    database,
                    audit_checks.ISSUED_EVENT,
                    **{
                        **options,
                        "round_number": n,
                        "duration": args.warmup if n == 0 else args.duration,
                    },
                )
                for n in range(args.rounds + 1)
            ]
        runs.extend(these)
        rows.append({"workers": workers, "threads": threads, **harness.summarise(these[1:])})
        if not args.json:
            row = rows[-1]
            invalid = (
                ""
                if all(r.valid for r in these)
                else "  INVALID: "
                + "; ".join(row["problems"] or ["errors or bad answers (see --json)"])
            )
            print(
                f"  echo {workers}x{threads}: {row['median_requests_per_s']:>8,.0f} req/s  "
                f"p99 {row['median_p99_ms']:>7.2f} ms  runs {row['runs_requests_per_s']}  "
                f"(others' CPU: up to {row['max_others_cpu_pct']:.0f}%){invalid}"
            )
    trail = audit_checks.seal_and_verify_trail(work, env)
    if not args.json:
        print(f"  {audit_checks.describe_trail(trail)}")
    return {
        "benchmark": "token_endpoint_sweep",
        "machine": harness.machine(),
        "load": command_line.load_report(args),
        "log_level": args.log_level or "Echo's default",
        "configs": rows,
        "audit_trail": trail,
        "valid": all(r.valid for r in runs) and trail["valid"],
        "runs": [asdict(r) for r in runs],
    }


def report(result: dict[str, Any]) -> None:
    echo, node = result["echo"], result["node"]
    print()
    print(
        f"Token endpoint, median of {len(echo['runs_requests_per_s'])} alternating runs "
        f"({result['load']['connections']} connections, {result['load']['duration']} s each):"
    )
    print(f"  {'':20} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}  configuration")
    for name, row in (("echo", echo), ("node", node), *result["layers"].items()):
        print(
            f"  {name:20} {row['median_requests_per_s']:>10,.1f} {row['median_p50_ms']:>8.2f} "
            f"{row['median_p99_ms']:>8.2f}  {row['config']}"
        )
    for name, row in result["layers"].items():
        print(f"  layer {name}: {row['ratio_to_node']:.3f}x node-oidc-provider")
    verdict = (
        "meets the goal"
        if result["meets_goal"]
        else ("meets the floor" if result["meets_floor"] else "BELOW the floor")
    )
    print(
        f"  ratio  {result['ratio_echo_to_node']:.3f}x Echo / node-oidc-provider "
        f"{result['oidc_provider']} ({verdict}: at least {FLOOR}x with p99 at most "
        f"{P99_CEILING}x node's, goal {GOAL}x); per round {result['ratio_per_round']}"
    )
    print(
        f"  p99    {result['p99_echo_to_node']:.2f}x Echo / node-oidc-provider "
        f"(at most {P99_CEILING}x)"
    )
    rows = audit_checks.describe_audit_rows(echo, audit_checks.ISSUED_EVENT)
    print(f"  echo: {rows} (measured runs)")
    print(f"  {audit_checks.describe_trail(result['audit_trail'])}")
    harness.print_run_checks(result)


def main(argv: list[str] | None = None) -> int:
    parser = command_line.parser_of(__doc__, prefix="echo-", node=True)
    parser.add_argument(
        "--layers",
        nargs="*",
        choices=LAYERS,
        default=None,
        help="also load these stripped-down endpoints of stack_layers.py in the same rounds "
        "(how fast each layer of Echo's stack can go here); no names: all of them",
    )
    parser.add_argument("--sweep", action="store_true", help="Echo alone over --configs")
    parser.add_argument(
        "--configs",
        type=parse_config,
        nargs="+",
        default=[parse_config(c) for c in SWEEP_CONFIGS],
        help="WORKERSxTHREADS for --sweep",
    )
    args = command_line.parse_load_arguments(parser, argv)
    if args.rounds < 3 and not args.sweep:
        parser.error("--rounds must be at least 3 (the comparison reports medians)")
    # --layers without names means all of them; without --layers, none.
    args.layers = list(LAYERS) if args.layers == [] else (args.layers or [])
    if args.sweep:  # its rows are printed as they come
        return command_line.exit_status(
            command_line.run_in_folder(args, "echo-token-bench-", sweep, lambda _: None), None
        )
    return command_line.exit_status(
        command_line.run_in_folder(args, "echo-token-bench-", compare, report), "meets_floor"
    )


if __name__ == "__main__":
    command_line.exit_with(main)
