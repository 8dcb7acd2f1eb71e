"""Token verification throughput: Echo Identity's ``POST /verify`` and ``POST /introspect``
against node-oidc-provider's introspection endpoint (RFC 7662) on this machine.

Every request is a client-authenticated POST (HTTP Basic) with ``token=...`` in the body, and a
good answer is a 200 whose body says ``"active": true``; wrk checks every answer
(``wrk_checked.lua``), and a run with any other answer, a socket error or a timeout is invalid.

- ``echo-verify``: Echo's ``/verify`` checks an ES256 JWT access token that Echo minted for the
  calling client (client_credentials; its audience is the client), then its revocation, and
  writes one ``oauth.token.verified`` audit row.
- ``echo-introspect``: Echo's ``/introspect`` with the same kind of token, the caller's own;
  one ``oauth.token.introspected`` audit row per answer.
- ``node``: node-oidc-provider introspects an **opaque** access token (client_credentials, the
  caller's own). It refuses to introspect JWT access tokens ("Structured JWT Tokens cannot be
  introspected"), so it looks an opaque token up in its in-memory adapter instead of verifying
  a signature, and it writes nothing.

A fresh token is minted for each run (tokens live 600 s on both servers). Runs alternate
(echo-verify, echo-introspect, node, ...); the report gives each one's median requests/s and
p99 over the rounds and the ratios to node's median. The issue's bar: ``/verify`` at least
0.5x node's introspection. After each Echo run the script counts the run's successful audit
rows in Echo's SQLite database (read-only) and requires one per good answer; after the last
run it seals the trail with ``echo-identity worker --once`` and requires
``echo-identity audit verify`` to pass with nothing left unsealed.

Echo runs in production mode on SQLite with ``serve --workers 2`` and serve's default threads
unless ``--echo-threads`` is given, at Echo's default log level unless ``--echo-log-level``.

    .venv/bin/python benchmarks/verify_endpoint.py [--rounds 3] [--duration 10] [--warmup 3] \
        [--connections 32] [--echo-workers 2] [--echo-threads N] [--node-modules DIR] [--json]

Needs ``wrk``, ``node`` and ``npm`` on PATH (``--node-modules`` reuses an install of
``oidc-provider``). Exits with status 1 when ``/verify`` is below the bar and 2 when a run saw
errors or an audit check failed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import audit_checks  # isort: skip
import command_line  # isort: skip
import harness  # isort: skip
import targets  # isort: skip

FLOOR = 0.5  # /verify requests/s over node-oidc-provider's introspection requests/s
TOKEN_LIFETIME = 600  # seconds, on both servers
VERIFIED = "oauth.token.verified"
INTROSPECTED = "oauth.token.introspected"


@dataclass(frozen=True)
class Endpoint:
    """One of the three loads: a label, the server, the path and (for Echo) the audit event
    each good answer must have written."""

    label: str
    target: harness.Target
    path: str
    audit_event: str | None

    def call(self) -> harness.Call:
        """The request for one run, with a token minted for it just now."""
        body = f"token={quote(mint_token(self.target), safe='')}"
        return harness.Call(
            self.path, body, harness.form_headers(self.target.authorization), targets.ACTIVE_EXPECT
        )


def mint_token(target: harness.Target) -> str:
    """A client_credentials access token for the target's benchmark client."""
    status, answer = targets.form_post(target, "/token", targets.GRANT_BODY)
    if status != 200 or not isinstance(answer.get("access_token"), str):
        raise SystemExit(f"{target.name}: /token answered {status}: {answer}")
    token: str = answer["access_token"]
    return token


def check_endpoint(endpoint: Endpoint) -> dict[str, Any]:
    """Before measuring: a fresh token is active for its own client, the same token with its
    last character changed is not, and node's token is opaque (not a JWT)."""
    target = endpoint.target
    token = mint_token(target)
    if target.name == "node" and token.count(".") == 2:
        raise SystemExit("node: the access token looks like a JWT; it must be opaque here")
    status, answer = targets.form_post(target, endpoint.path, f"token={quote(token, safe='')}")
    if status != 200 or answer.get("active") is not True:
        raise SystemExit(f"{endpoint.label}: a fresh token answered {status}: {answer}")
    if answer.get("client_id") != target.client_id:
        raise SystemExit(f"{endpoint.label}: client_id {answer.get('client_id')!r} in {answer}")
    # Not the last character: its low bits may be padding that decoders ignore.
    middle = len(token) - 10
    tampered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    status_bad, refused = targets.form_post(
        target, endpoint.path, f"token={quote(tampered, safe='')}"
    )
    if refused.get("active") is not False:
        raise SystemExit(f"{endpoint.label}: a tampered token answered {status_bad}: {refused}")
    return {
        "token_bytes": len(token),
        "opaque": token.count(".") != 2,
        "answer": answer,
        "tampered_token": {"status": status_bad, "answer": refused},
    }


def measure(
    wrk: str, endpoint: Endpoint, database: Path | str, round_number: int, **options: Any
) -> harness.Run:
    """One run of ``endpoint`` (``options``: :func:`load`'s wrk settings); Echo's runs also
    check their audit rows."""
    call, target = endpoint.call(), endpoint.target
    if endpoint.audit_event is None:
        return harness.load(
            wrk, target, call, round_number=round_number, label=endpoint.label, **options
        )
    return audit_checks.load_audited(
        wrk,
        target,
        call,
        database,
        endpoint.audit_event,
        round_number=round_number,
        label=endpoint.label,
        **options,
    )


def compare(args: argparse.Namespace, wrk: str, work: Path) -> dict[str, Any]:
    options = command_line.load_options(args)
    with targets.echo_and_node(work, args, opaque=True) as peers:
        echo, node, database = peers.echo, peers.node, peers.database
        endpoints = (
            Endpoint("echo-verify", echo, "/verify", VERIFIED),
            Endpoint("echo-introspect", echo, "/introspect", INTROSPECTED),
            Endpoint(
                "node-introspect",
                node,
                targets.discovered_path(node, "introspection_endpoint"),
                None,
            ),
        )
        checks = {e.label: check_endpoint(e) for e in endpoints}
        warmups = [
            measure(wrk, e, database, 0, **{**options, "duration": args.warmup}) for e in endpoints
        ]
        runs: list[harness.Run] = []
        for number in range(1, args.rounds + 1):
            for endpoint in endpoints:
                runs.append(measure(wrk, endpoint, database, number, **options))
                harness.print_progress(runs[-1], args.json)
    # the servers have stopped
    trail = audit_checks.seal_and_verify_trail(peers.echo_folder, peers.echo_env)

    def runs_of(label: str) -> list[harness.Run]:
        return [r for r in runs if r.target == label]

    summary = {e.label: harness.summarise(runs_of(e.label)) for e in endpoints}
    node_row = summary["node-introspect"]
    ratios = {
        label: {
            "requests_per_s": round(
                summary[label]["median_requests_per_s"] / node_row["median_requests_per_s"], 3
            ),
            "p99": round(summary[label]["median_p99_ms"] / node_row["median_p99_ms"], 2),
            "per_round": [
                round(e.requests_per_s / n.requests_per_s, 3)
                for e, n in zip(runs_of(label), runs_of("node-introspect"), strict=True)
            ],
        }
        for label in ("echo-verify", "echo-introspect")
    }
    verify_ratio = ratios["echo-verify"]["requests_per_s"]
    return {
        "benchmark": "verify_endpoint",
        "machine": harness.machine(),
        "oidc_provider": peers.node_version,
        "load": command_line.load_report(args),
        "echo": {
            "config": echo.description,
            "log_level": args.log_level or "Echo's default",
        },
        "node": {
            "config": node.description,
            "note": "node-oidc-provider refuses to introspect JWT access tokens, so it "
            "introspects an opaque access token (a lookup in its in-memory adapter)",
        },
        "endpoints": {
            e.label: {"path": e.path, "audit_event": e.audit_event, **summary[e.label]}
            for e in endpoints
        },
        "ratios_to_node": ratios,
        "floor": FLOOR,
        "meets_floor": verify_ratio >= FLOOR,
        "audit_trail": trail,
        "checks": checks,
        **harness.runs_report(warmups, runs, checks_pass=trail["valid"]),
    }


def report(result: dict[str, Any]) -> None:
    rows = result["endpoints"]
    load_ = result["load"]
    print()
    print(
        f"/verify and /introspect, median of {load_['rounds']} alternating runs "
        f"({load_['connections']} connections, {load_['duration']} s each):"
    )
    print(f"  {'':16} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}  path")
    for label, row in rows.items():
        print(
            f"  {label:16} {row['median_requests_per_s']:>10,.1f} {row['median_p50_ms']:>8.2f} "
            f"{row['median_p99_ms']:>8.2f}  {row['path']}"
        )
    print(f"  echo: {result['echo']['config']}, log level {result['echo']['log_level']}")
    print(f"  node: {result['node']['config']}, oidc-provider {result['oidc_provider']}")
    print(f"        ({result['node']['note']})")
    for label, ratio in result["ratios_to_node"].items():
        bar = ""
        if label == "echo-verify":
            verdict = "meets" if result["meets_floor"] else "BELOW"
            bar = f" ({verdict} the bar of {result['floor']}x)"
        print(
            f"  {label}: {ratio['requests_per_s']:.3f}x node's introspection{bar}, "
            f"p99 {ratio['p99']:.2f}x node's; per round {ratio['per_round']}"
        )
    for label, row in rows.items():
        if row["audit_event"]:
            print(f"  {label}: {audit_checks.describe_audit_rows(row, row['audit_event'])}")
    print(f"  {audit_checks.describe_trail(result['audit_trail'])}")
    harness.print_run_checks(result)


def main(argv: list[str] | None = None) -> int:
    parser = command_line.parser_of(__doc__, prefix="echo-", node=True)
    args = command_line.parse_load_arguments(parser, argv, min_rounds=3)
    # A token is minted before the quiet wait and must outlive the run that uses it.
    if args.duration + args.quiet_wait > TOKEN_LIFETIME - 60:
        parser.error(f"--duration + --quiet-wait must stay under {TOKEN_LIFETIME - 60} s")
    return command_line.exit_status(
        command_line.run_in_folder(args, "echo-verify-bench-", compare, report), "meets_floor"
    )


if __name__ == "__main__":
    command_line.exit_with(main)
