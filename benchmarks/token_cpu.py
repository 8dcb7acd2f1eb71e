"""CPU per token in process: Echo Identity's ``POST /token`` against the layers of its own stack.

Each app is called as a WSGI callable in this process (no server, no sockets), by
``--threads`` threads at once (8, the request threads of one ``serve`` worker; 1 for a
sequential figure), ``client_credentials`` with HTTP Basic, N times after a warm-up; the
figure is ``time.process_time()`` per request (all threads of the process: Echo's audit
writer included) and the median over rounds. Every response is checked (200, a token in the
body), and Echo's audit rows are counted: one per request.

``--path verify|introspect|vault`` measures (or ``--profile``s) another of Echo's hot paths
instead: ``/verify`` and ``/introspect`` of a client-credentials token, or the vault's
fresh-token hand-out (set up as ``vault_handout.py`` does); the layers are token endpoints
and are compared on ``token`` only.

- ``echo``: ``create_app`` in production mode on a fresh SQLite database under a temporary
  folder, at ``--log-level`` (default INFO, the shipped default), logging to a null stream;
  one audit row per token (the rows are counted at the end).
- ``flask_authlib``, ``wsgi``, ``wsgi_sqlite``: the layers of ``stack_layers.py``.

    .venv/bin/python benchmarks/token_cpu.py [--requests 2000] [--rounds 5] [--json]
    .venv/bin/python benchmarks/token_cpu.py --profile echo   # cProfile of Echo's requests

The acceptance bar of issue 12 is ``echo`` <= 2x ``flask_authlib``.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import logging
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from stack_layers import build, prepare_database, signing_jwk  # isort: skip

ISSUER = "https://bench.echo.test"
SCOPE = "api:read"
WsgiApp = Callable[..., Iterable[bytes]]


def environ_for(
    client_id: str,
    secret: str,
    *,
    path: str = "/token",
    body: bytes | None = None,
    bearer: str | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> Callable[[], dict[str, Any]]:
    """A WSGI environ factory for one POST (Basic client authentication unless ``bearer``)."""
    if body is None:
        body = f"grant_type=client_credentials&scope={SCOPE}".encode()
    if bearer is not None:
        authorization = f"Bearer {bearer}"
    else:
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        authorization = f"Basic {basic}"
    base = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": authorization,
        "HTTP_USER_AGENT": "token-cpu/1",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }

    def make() -> dict[str, Any]:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(body)
        return environ

    return make


def call(app: WsgiApp, environ: dict[str, Any], expect: bytes = b"access_token") -> bytes:
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        status.append(line)

    result = app(environ, start_response)
    body = b"".join(result)
    close = getattr(result, "close", None)
    if close is not None:
        close()
    if not status or not status[0].startswith("200") or expect not in body:
        raise SystemExit(f"bad response: {status} {body[:300]!r}")
    return body


def echo_app(folder: Path, log_level: str) -> tuple[WsgiApp, str, str, Callable[[str], int]]:
    env = {
        "ECHO_ISSUER": ISSUER,
        "ECHO_SECRET_KEY": secrets.token_urlsafe(48),
        "ECHO_VAULT_KEK": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "ECHO_DATABASE_URL": f"sqlite:///{folder / 'echo.db'}",
        "ECHO_VAR_DIR": str(folder),
        "ECHO_LOG_LEVEL": log_level,
        # the benchmark's one caller makes thousands of API calls a minute
        "ECHO_API_RATE_LIMIT": "100000000/minute",
    }
    os.environ.update(env)
    from sqlalchemy import text

    from echo_identity.app import create_app
    from echo_identity.config import load_settings
    from echo_identity.db import Database
    from echo_identity.idp.clients import ClientRegistry
    from echo_identity.idp.keys import ensure_signing_keys
    from echo_identity.idp.provider import key_schedule
    from echo_identity.keys.kek_providers import keyring_factory
    from echo_identity.logs import configure_logging
    from echo_identity.migrations import upgrade

    settings, _ = load_settings()
    configure_logging(settings.log_level, "json")
    for handler in logging.getLogger().handlers:  # keep the lines, drop the terminal
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(Path(os.devnull).open("w"))  # noqa: SIM115
    database = Database(settings.database_url)
    upgrade(database)
    ensure_signing_keys(database, keyring_factory(settings), key_schedule(settings))
    from echo_identity.services import build_services

    services = build_services(settings, database)
    with database.transaction() as session:
        created = ClientRegistry(session, settings.secret_key_bytes()).create(
            name="bench", grant_types=["client_credentials"], scope=SCOPE
        )
    app = create_app(settings, database, services=services)

    def count(event_type: str) -> int:
        with database.engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM audit_events WHERE event_type = :type"),
                    {"type": event_type},
                ).scalar_one()
            )

    assert created.client_secret
    return app, created.client.client_id, created.client_secret, count


def layer_app(folder: Path, layer: str) -> tuple[WsgiApp, str, str]:
    client_id, secret = "bench", secrets.token_urlsafe(24)
    os.environ.update(
        BENCH_ISSUER=ISSUER,
        BENCH_CLIENT_ID=client_id,
        BENCH_CLIENT_SECRET=secret,
        BENCH_JWK=json.dumps(signing_jwk()),
        BENCH_DATABASE=str(folder / f"{layer}.db"),
    )
    if "sqlite" in layer:
        prepare_database(str(folder / f"{layer}.db"), client_id, secret)
    return build(layer), client_id, secret


@dataclass(frozen=True)
class EchoPath:
    """One of Echo's hot paths: the request, what a good answer contains, its audit event."""

    make: Callable[[], dict[str, Any]]
    expect: bytes
    event_type: str


def echo_path(path: str, app: WsgiApp, client_id: str, secret: str) -> EchoPath:
    """Set up ``path`` (token, verify, introspect, vault) on Echo's ``app``."""
    token_request = environ_for(client_id, secret)
    if path == "token":
        return EchoPath(token_request, b"access_token", "oauth.token.issued")
    if path in ("verify", "introspect"):
        token = json.loads(call(app, token_request()))["access_token"]
        body = urlencode({"token": token}).encode()
        make = environ_for(client_id, secret, path=f"/{path}", body=body)
        event = {"verify": "oauth.token.verified", "introspect": "oauth.token.introspected"}
        return EchoPath(make, b'"active":true', event[path])
    if path == "vault":
        from vault_handout import PROVIDER, seed_echo  # isort: skip

        seeded = seed_echo(dict(os.environ))
        vault_token = environ_for(
            seeded.client_id,
            seeded.client_secret,
            body=urlencode({"grant_type": "client_credentials", "scope": "vault:read"}).encode(),
        )
        bearer = json.loads(call(app, vault_token()))["access_token"]
        make = environ_for(
            "",
            "",
            path=f"/api/v1/users/{seeded.sub}/connections/{PROVIDER}/token",
            body=b"{}",
            bearer=bearer,
            content_type="application/json",
        )
        return EchoPath(make, seeded.upstream_token.encode(), "vault.token.read")
    raise SystemExit(f"unknown path {path!r}")


def measure(
    app: WsgiApp,
    make: Callable[[], dict[str, Any]],
    requests: int,
    expect: bytes = b"access_token",
    threads: int = 1,
) -> float:
    """µs of process CPU (every thread's) per request, ``requests`` spread over ``threads``
    calling the app at once, as a server's request threads do."""

    failures: list[BaseException] = []

    def run(count: int) -> None:
        try:
            for _ in range(count):
                call(app, make(), expect)
        except BaseException as failure:  # a bad response ends the benchmark, from any thread
            failures.append(failure)

    share = [requests // threads + (1 if i < requests % threads else 0) for i in range(threads)]
    started = time.process_time()
    if threads == 1:
        run(requests)
    else:
        workers = [threading.Thread(target=run, args=(n,)) for n in share]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    if failures:
        raise failures[0]
    return (time.process_time() - started) / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--threads",
        type=int,
        default=8,
        help="threads calling each app at once (serve's default: 8 request threads)",
    )
    parser.add_argument("--layers", default="flask_authlib,wsgi,wsgi_sqlite")
    parser.add_argument(
        "--path",
        choices=["token", "verify", "introspect", "vault"],
        default="token",
        help="Echo's path to measure (the layers are token endpoints: compared for token only)",
    )
    parser.add_argument("--profile", choices=["echo"], help="print a cProfile of Echo instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="token-cpu-") as work:
        folder = Path(work)
        echo, client_id, secret, count = echo_app(folder, args.log_level)
        hot = echo_path(args.path, echo, client_id, secret)
        apps: dict[str, tuple[WsgiApp, Callable[[], dict[str, Any]], bytes]] = {
            "echo": (echo, hot.make, hot.expect)
        }
        for layer in filter(None, args.layers.split(",") if args.path == "token" else []):
            app, layer_id, layer_secret = layer_app(folder, layer)
            apps[layer] = (app, environ_for(layer_id, layer_secret), b"access_token")
        for app, make, expect in apps.values():  # warm-up: imports, caches, first keys
            measure(app, make, 200, expect)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            measure(echo, hot.make, args.requests, hot.expect)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(60)
            return 0
        per_round: dict[str, list[float]] = {name: [] for name in apps}
        before = count(hot.event_type)
        for _ in range(args.rounds):
            for name, (app, make, expect) in apps.items():
                per_round[name].append(
                    measure(app, make, args.requests, expect, threads=args.threads)
                )
        written = count(hot.event_type) - before
        expected = args.rounds * args.requests
        medians = {name: statistics.median(values) for name, values in per_round.items()}
        result = {
            "path": args.path,
            "requests_per_round": args.requests,
            "rounds": args.rounds,
            "log_level": args.log_level,
            "threads": args.threads,
            "cpu_us_per_token": medians,
            "per_round": per_round,
            "echo_vs_flask_authlib": medians["echo"] / medians["flask_authlib"]
            if "flask_authlib" in medians
            else None,
            "audit_rows_written": written,
            "audit_rows_expected": expected,
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for name, value in medians.items():
                print(f"{name:16} {value:8.0f} µs/request ({args.path})")
            if result["echo_vs_flask_authlib"]:
                print(f"echo / flask_authlib: {result['echo_vs_flask_authlib']:.2f}x (bar: ≤ 2)")
            print(f"audit rows: {written} written, {expected} expected")
        return 0 if written == expected else 2


if __name__ == "__main__":
    sys.exit(main())
