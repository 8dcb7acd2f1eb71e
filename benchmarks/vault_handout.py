"""Vault fresh-token hand-out: Echo Identity against the same work without the framework.

``POST /api/v1/users/<sub>/connections/<provider>/token`` — a backend service with a
client-credentials access token (``vault:read``, the API audience) asks for a user's
third-party token; the connection's token expires ten years ahead, so no refresh is needed and
the call is: verify the bearer JWT, check who may reach whom, read the connection, decrypt its
envelope (unwrap the user's data key with the KEK, then the token), write one
``vault.token.read`` audit row, answer JSON.

- ``echo``: ``echo-identity serve --workers W [--threads T]`` in production mode on SQLite,
  with the API rate limit raised to ``ECHO_API_RATE_LIMIT=1000000/minute`` (the default,
  600/minute per address, would answer 429 instead of the hand-out; every request comes from
  127.0.0.1).
  The provider, the service's client (registered for the provider), the user, their consent and
  their connection with its encrypted tokens are made in this process with Echo's own services
  (``build_services``, ``ProviderRegistry``, ``ClientRegistry``, ``AccountService``,
  ``VaultConsents``, ``store_tokens``) before the server starts; the bearer token comes from
  Echo's ``POST /token`` (client_credentials), fetched again before every run.
- ``layer``: ``vault_layer.py``, a bare WSGI callable doing that work with joserfc, raw
  ``sqlite3`` and ``cryptography`` (see its docstring), on granian with the same workers x
  threads. Its bearer token is minted here with the same claims as Echo's. Its audit writers
  queue on a ``flock`` (``--layer-writers flock``, the default: the stricter ceiling) or on
  SQLite's busy handler (``busy``).

wrk loads each with the same request (32 connections by default); runs alternate (echo,
layer, echo, layer, ...) after a discarded warm-up, and the report gives each one's median
requests/s and p99 over the rounds, their ratios (Echo / layer) and each server's CPU per
call (its process group's CPU time from the start of a run until it is idle again / calls
audited). Every answer is checked (``wrk_checked.lua``: a 200 whose body holds the
stored token; anything else is counted and makes the result invalid), and once the server is
idle after a run the ``vault.token.read`` rows its database gained are counted: one per good
answer, plus at most one per request still in flight when wrk stopped, or the result is
invalid. Before loading, each target must refuse a call without a token and one with an
altered signature (401).

Issue 12's bar: Echo ≥ 0.6x the layer's requests/s and Echo's p99 ≤ 2x the layer's.

    .venv/bin/python benchmarks/vault_handout.py [--rounds 3] [--duration 10] [--warmup 3] \
        [--connections 32] [--workers 2] [--threads T] [--log-level INFO] [--json]

Needs ``wrk`` on PATH. Exits 1 below the bar, 2 when a run saw a bad response, a socket error
or a missing audit row.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

import audit_checks  # isort: skip
import command_line  # isort: skip
import harness  # isort: skip
import targets  # isort: skip
import vault_layer  # isort: skip

RATE_LIMIT = "1000000/minute"  # never reached: the benchmark measures the hand-out
MIN_RATIO = 0.6
MAX_P99_RATIO = 2.0
SCOPE = "vault:read"
PROVIDER = "github-bench"
PROVIDER_SCOPE = "repo read:user"
API_AUDIENCE = harness.ISSUER + "/api/v1"  # Echo's default ECHO_API_AUDIENCE
BODY = '{"min_ttl": 60}'
AUDITED = "vault.token.read"
CONNECTION_LIFETIME = timedelta(days=3650)  # far ahead: no refresh during the benchmark
MAX_DURATION = 300  # Echo's access tokens live 600 s at most; one is fetched per run


# --- Echo Identity -------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    """What :func:`seed_echo` made: the service's client, the user and the stored token."""

    client_id: str
    client_secret: str
    sub: str
    upstream_token: str


def seed_echo(env: Mapping[str, str]) -> Seeded:
    """Make the provider, the service's client, a user, their consent and their connection
    (tokens encrypted, expiring ten years ahead) with Echo's own services, committed."""
    from echo_identity.config import load_settings
    from echo_identity.idp.clients import ClientRegistry
    from echo_identity.services import build_services
    from echo_identity.vault.consents import VaultConsents
    from echo_identity.vault.models import Connection
    from echo_identity.vault.providers import ProviderRegistry
    from echo_identity.vault.token_store import store_tokens
    from echo_identity.vault.upstream import UpstreamToken

    settings, _ = load_settings(env)
    services = build_services(settings)
    upstream_token = "gho_bench_" + secrets.token_urlsafe(30)
    try:
        with services.database.session() as session:
            keyring = services.keyrings(session)
            provider = ProviderRegistry(session, keyring).add(
                PROVIDER,
                client_id="echo-at-the-provider",
                client_secret=secrets.token_urlsafe(24),
                authorize_url="https://provider.bench.example.test/authorize",
                token_url="https://provider.bench.example.test/token",  # noqa: S106 - a URL
                scope=PROVIDER_SCOPE,
            )
            registered = ClientRegistry(session, settings.secret_key_bytes()).create(
                "Bench vault service",
                grant_types=["client_credentials"],
                scope=SCOPE,
                vault_providers=[PROVIDER],
            )
            user = services.accounts.service(session).create_user(
                "vaultbench", "vaultbench@example.org", secrets.token_urlsafe(16)
            )
            client_id = registered.client.client_id
            VaultConsents(session, services.clock.now).grant(
                user, PROVIDER, PROVIDER_SCOPE, [client_id]
            )
            connection = Connection(user_id=user.id, provider_id=provider.id)
            session.add(connection)
            session.flush()  # the id binds the ciphertexts to this row
            store_tokens(
                keyring,
                connection,
                UpstreamToken(
                    access_token=upstream_token,
                    token_type="Bearer",  # noqa: S106 - a token type
                    refresh_token="ghr_bench_" + secrets.token_urlsafe(30),
                    expires_in=int(CONNECTION_LIFETIME.total_seconds()),
                    scope=PROVIDER_SCOPE,
                ),
                now=services.clock.now(),
                refresh_window=services.vault.refresh_window,
            )
            sub = user.sub
            session.commit()
    finally:
        services.database.dispose()
    assert registered.client_secret is not None
    return Seeded(client_id, registered.client_secret, sub, upstream_token)


def echo_bearer(echo: harness.Target) -> str:
    """A fresh access token for the service, from Echo's ``POST /token``."""
    status, answer = targets.form_post(
        echo, "/token", f"grant_type=client_credentials&scope={SCOPE}"
    )
    if status != 200 or not isinstance(answer.get("access_token"), str):
        raise SystemExit(f"echo: POST /token answered {status}: {answer}")
    token: str = answer["access_token"]
    return token


# --- the bare layer ------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerKeys:
    """The layer's signing key (its public half goes to the layer) and its KEK."""

    signing: ECKey
    kek: bytes
    pseudonym_key: bytes


def layer_bearer(keys: LayerKeys, template: Mapping[str, Any]) -> str:
    """An access token for the layer: Echo's token's claims, freshly dated, signed here."""
    now = int(time.time())
    claims = {
        **template,
        "iat": now,
        "exp": now + int(template["exp"]) - int(template["iat"]),
        "jti": secrets.token_urlsafe(16),
    }
    header = {"alg": "ES256", "typ": "at+jwt", "kid": keys.signing.kid}
    token: str = jwt.encode(header, claims, keys.signing, algorithms=["ES256"])
    return token


@contextmanager
def layer_server(
    folder: Path, keys: LayerKeys, seeded: Seeded, workers: int, threads: int, *, flock: bool
) -> Iterator[harness.Target]:
    """``vault_layer:app`` on granian (``flock``: writers queue on a lock file)."""
    database = folder / "layer.db"
    vault_layer.prepare_database(
        str(database),
        kek=keys.kek,
        client_id=seeded.client_id,
        sub=seeded.sub,
        provider=PROVIDER,
        access_token=seeded.upstream_token,
        expires_at=datetime.now(UTC) + CONNECTION_LIFETIME,
    )
    env = {
        "BENCH_ISSUER": harness.ISSUER,
        "BENCH_AUDIENCE": API_AUDIENCE,
        "BENCH_JWK": json.dumps(keys.signing.as_dict(private=False)),
        "BENCH_KEK": base64.urlsafe_b64encode(keys.kek).decode(),
        "BENCH_PSEUDONYM_KEY": base64.urlsafe_b64encode(keys.pseudonym_key).decode(),
        "BENCH_DATABASE": str(database),
        "BENCH_FLOCK": "1" if flock else "0",
    }
    writers = "flock" if flock else "SQLite's busy handler"
    with targets.granian_server(
        "vault_layer:app",
        folder,
        env,
        workers=workers,
        threads=threads,
        ready_path="/readyz",
        log=folder / "layer.log",
    ) as (port, pgid):
        yield harness.Target(
            "layer",
            port,
            seeded.client_id,
            "",  # the layer takes bearer tokens minted here
            f"vault_layer.py on granian --workers {workers} --blocking-threads {threads}, "
            f"writers queued by {writers}",
            pgid,
        )


# --- checks --------------------------------------------------------------------------------


def handout_call(path: str, bearer: str, upstream_token: str) -> harness.Call:
    """The hand-out with ``bearer``: good when a 200 holds the stored token."""
    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    return harness.Call(path, BODY, headers, harness.lua_plain(upstream_token))


def check_endpoint(target: harness.Target, call: harness.Call, expected: str) -> dict[str, Any]:
    """``call`` answers the stored token ``expected``; calls without a token or with an
    altered signature are refused (401). Exits otherwise."""
    status, headers, raw = harness.http_call(
        target.port, "POST", call.path, body=call.body, headers=call.headers
    )
    body = json.loads(raw) if headers.get("content-type", "").startswith("application/json") else {}
    if status != 200 or body.get("access_token") != expected:
        raise SystemExit(f"{target.name}: the call answered {status}: {raw[:300]!r}")
    head, _, signature = call.headers["Authorization"].rpartition(".")
    altered = head + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    refusals = {}
    for case, headers_sent in (
        ("no token", {"Content-Type": "application/json"}),
        ("altered signature", {**call.headers, "Authorization": altered}),
    ):
        refused, _, raw = harness.http_call(
            target.port, "POST", call.path, body=call.body, headers=headers_sent
        )
        if refused != 401:
            raise SystemExit(f"{target.name}: a call with {case} answered {refused}: {raw!r}")
        refusals[case] = refused
    return {"answer": sorted(body), "token_type": body.get("token_type"), "refusals": refusals}


def _claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (Echo's own token, used as the layer's template)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


# --- the benchmark -------------------------------------------------------------------------


def benchmark(args: argparse.Namespace, wrk: str, work: Path) -> dict[str, Any]:
    echo_folder, layer_folder = work / "echo", work / "layer"
    echo_folder.mkdir()
    layer_folder.mkdir()
    env = {
        **targets.echo_environment(echo_folder, args.log_level),
        "ECHO_API_RATE_LIMIT": RATE_LIMIT,
    }
    targets.migrate_echo(echo_folder, env)
    seeded = seed_echo(env)
    keys = LayerKeys(
        ECKey.generate_key("P-256", {"kid": "vault-layer-es256", "alg": "ES256"}, private=True),
        secrets.token_bytes(32),
        secrets.token_bytes(32),
    )
    path = f"/api/v1/users/{seeded.sub}/connections/{PROVIDER}/token"
    options = command_line.load_options(args)
    with contextlib.ExitStack() as servers:
        echo = servers.enter_context(
            targets.echo_server(
                echo_folder,
                env,
                (seeded.client_id, seeded.client_secret),
                args.workers,
                args.threads,
            )
        )
        layer = servers.enter_context(
            layer_server(
                layer_folder,
                keys,
                seeded,
                args.workers,
                args.threads,
                flock=args.layer_writers == "flock",
            )
        )
        template = _claims_of(echo_bearer(echo))
        bearers: dict[str, Callable[[], str]] = {
            "echo": lambda: echo_bearer(echo),
            "layer": lambda: layer_bearer(keys, template),
        }
        databases = {"echo": targets.echo_database(echo_folder), "layer": layer_folder / "layer.db"}

        def call(target: harness.Target) -> harness.Call:  # a fresh bearer token for every run
            return handout_call(path, bearers[target.name](), seeded.upstream_token)

        checks = {t.name: check_endpoint(t, call(t), seeded.upstream_token) for t in (echo, layer)}

        def once(target: harness.Target, number: int, duration: int) -> harness.Run:
            return audit_checks.load_audited(
                wrk,
                target,
                call(target),
                databases[target.name],
                AUDITED,
                round_number=number,
                **{**options, "duration": duration},
            )

        warmups = [once(t, 0, args.warmup) for t in (echo, layer)]
        runs: list[harness.Run] = []
        for number in range(1, args.rounds + 1):
            for target in (echo, layer):
                runs.append(once(target, number, args.duration))
                harness.print_progress(runs[-1], args.json)
    return report_of(args, runs, warmups, checks, (echo, layer), path)


def report_of(
    args: argparse.Namespace,
    runs: list[harness.Run],
    warmups: list[harness.Run],
    checks: dict[str, Any],
    targets: tuple[harness.Target, harness.Target],
    path: str,
) -> dict[str, Any]:
    echo, layer = targets
    echo_summary = harness.summarise([r for r in runs if r.target == "echo"])
    layer_summary = harness.summarise([r for r in runs if r.target == "layer"])
    ratio = echo_summary["median_requests_per_s"] / layer_summary["median_requests_per_s"]
    p99_ratio = echo_summary["median_p99_ms"] / layer_summary["median_p99_ms"]
    return {
        "benchmark": "vault_handout",
        "machine": harness.machine(),
        "load": {**command_line.load_report(args), "request": f"POST {path} {BODY}"},
        "echo": {
            "config": echo.description,
            "log_level": args.log_level or "Echo's default",
            "rate_limit": f"ECHO_API_RATE_LIMIT={RATE_LIMIT} (raised so it never answers)",
            **echo_summary,
        },
        "layer": {"config": layer.description, **layer_summary},
        "ratio_echo_to_layer": round(ratio, 3),
        "p99_ratio_echo_to_layer": round(p99_ratio, 3),
        "ratio_per_round": [
            round(e / b, 3)
            for e, b in zip(
                echo_summary["runs_requests_per_s"],
                layer_summary["runs_requests_per_s"],
                strict=True,
            )
        ],
        "bar": {"min_ratio": MIN_RATIO, "max_p99_ratio": MAX_P99_RATIO},
        "meets_bar": ratio >= MIN_RATIO and p99_ratio <= MAX_P99_RATIO,
        "checks": checks,
        **harness.runs_report(warmups, runs),
    }


def print_report(result: dict[str, Any]) -> None:
    echo, layer = result["echo"], result["layer"]
    load = result["load"]
    print(
        f"Vault fresh token, median of {load['rounds']} alternating runs "
        f"({load['connections']} connections, {load['duration']} s each):"
    )
    print(f"  {'':6} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/call':>12}  configuration")
    for name, row in (("echo", echo), ("layer", layer)):
        print(
            f"  {name:6} {row['median_requests_per_s']:>10,.1f} {row['median_p50_ms']:>8.2f} "
            f"{row['median_p99_ms']:>8.2f} {row['median_cpu_ms_per_call']:>12.3f}  {row['config']}"
        )
    verdict = "meets the bar" if result["meets_bar"] else "BELOW the bar"
    print(
        f"  ratio {result['ratio_echo_to_layer']:.3f}x requests/s, p99 "
        f"{result['p99_ratio_echo_to_layer']:.2f}x (Echo / layer; {verdict}: "
        f">= {MIN_RATIO}x and p99 <= {MAX_P99_RATIO}x); per round {result['ratio_per_round']}"
    )
    print(
        f"  audit rows: echo {echo['audit_rows']:,} for {echo['ok']:,} good responses, "
        f"layer {layer['audit_rows']:,} for {layer['ok']:,}"
    )
    harness.print_run_checks(result)


def main(argv: list[str] | None = None) -> int:
    parser = command_line.parser_of(__doc__)
    parser.add_argument(
        "--layer-writers",
        choices=["flock", "busy"],
        default="flock",
        help="how the layer's writers of several workers wait for SQLite's write lock: on a "
        "flock of a lock file (default: the faster, stricter ceiling) or SQLite's busy handler",
    )
    args = command_line.parse_load_arguments(parser, argv, max_duration=MAX_DURATION)
    return command_line.exit_status(
        command_line.run_in_folder(args, "echo-vault-bench-", benchmark, print_report), "meets_bar"
    )


if __name__ == "__main__":
    command_line.exit_with(main)
