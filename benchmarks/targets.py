"""The servers the HTTP benchmarks load, each started in its own process group and yielded as
a :class:`harness.Target` once it answers: Echo Identity (``echo-identity serve``, production
settings on SQLite), node-oidc-provider (``node_oidc/provider.mjs``) and the bare WSGI apps of
this folder on granian; and the token request they all answer.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness import (  # isort: skip
    BENCHMARKS,
    HOST,
    ISSUER,
    Call,
    Target,
    form_headers,
    free_port,
    http_json,
    require_tool,
    run_command,
    server,
    wait_ready,
)

SCOPE = "api:read"
GRANT_BODY = "grant_type=client_credentials&scope=api%3Aread"
GRANT_EXPECT = '"access_token"%s*:%s*"'  # Lua pattern a token answer's body must match
ACTIVE_EXPECT = '"active"%s*:%s*true'  # ... and an introspection or /verify answer's
NODE_SOURCES = BENCHMARKS / "node_oidc"


def token_call(target: Target) -> Call:
    """``POST /token`` with client_credentials, answered by a body with an access token."""
    return Call("/token", GRANT_BODY, form_headers(target.authorization), GRANT_EXPECT)


def form_post(target: Target, path: str, body: str) -> tuple[int, dict[str, Any]]:
    """``POST path`` with the target's Basic credentials; the status and the JSON answer."""
    return http_json(
        target.port, "POST", path, body=body, headers=form_headers(target.authorization)
    )


def discovered_path(target: Target, endpoint: str) -> str:
    """The path of the target's ``endpoint`` (``jwks_uri``, ``introspection_endpoint`` ...)
    in its discovery document, whatever host that names."""
    status, discovery = http_json(target.port, "GET", "/.well-known/openid-configuration")
    uri = discovery.get(endpoint)
    if status != 200 or not isinstance(uri, str):
        raise SystemExit(f"{target.name}: discovery answered {status} without {endpoint}")
    return "/" + uri.split("://", 1)[-1].split("/", 1)[-1]


# --- Echo Identity -------------------------------------------------------------------------


def echo_cli() -> str:
    return str(Path(sys.executable).with_name("echo-identity"))


def echo_environment(folder: Path, log_level: str | None) -> dict[str, str]:
    """Production settings (https issuer, generated secrets) with SQLite under ``folder`` (or,
    when ``BENCH_ECHO_POSTGRES_URL`` is set, a new schema in that PostgreSQL database);
    ``log_level`` ``None`` keeps Echo's default level."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ECHO_")}
    database = echo_database(folder)
    env.update(
        ECHO_ISSUER=ISSUER,
        ECHO_SECRET_KEY=secrets.token_urlsafe(48),
        ECHO_VAULT_KEK=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        ECHO_DATABASE_URL=database if isinstance(database, str) else f"sqlite:///{database}",
        ECHO_VAR_DIR=str(folder),
    )
    if log_level is not None:
        env["ECHO_LOG_LEVEL"] = log_level
    return env


def echo_database(folder: Path) -> Path | str:
    """The database :func:`echo_environment` configures for ``folder``: a SQLite file, or
    with ``BENCH_ECHO_POSTGRES_URL`` the URL of a schema made for ``folder`` in that database
    (made on first use; the benchmark's runs all use it)."""
    postgres = os.environ.get("BENCH_ECHO_POSTGRES_URL")
    if not postgres:
        return folder / "bench.db"
    remembered = folder / "database-url"
    if remembered.exists():
        return remembered.read_text()
    from sqlalchemy import create_engine, text  # only the PostgreSQL runs need it

    schema = "bench_" + secrets.token_hex(6)
    engine = create_engine(postgres)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    separator = "&" if "?" in postgres else "?"
    url = f"{postgres}{separator}options={quote(f'-csearch_path={schema}')}"
    remembered.write_text(url)
    return url


def migrate_echo(folder: Path, env: Mapping[str, str]) -> None:
    run_command([echo_cli(), "db", "upgrade"], env=env, cwd=folder)


def prepare_echo(folder: Path, env: Mapping[str, str]) -> tuple[str, str]:
    """Migrate the database and register the benchmark client; its id and secret."""
    migrate_echo(folder, env)
    created = json.loads(
        run_command(
            [
                echo_cli(),
                "clients",
                "create",
                "--name",
                "bench",
                "--grant-type",
                "client_credentials",
                "--scope",
                SCOPE,
                "--json",
            ],
            env=env,
            cwd=folder,
        )
    )
    return str(created["client_id"]), str(created["client_secret"])


def echo_serve_argv(port: int, workers: int, threads: int | None) -> list[str]:
    """``echo-identity serve`` on ``port``; ``threads`` ``None`` keeps serve's default."""
    argv = [echo_cli(), "serve", "--host", HOST, "--port", str(port), "--workers", str(workers)]
    return argv if threads is None else [*argv, "--threads", str(threads)]


@contextmanager
def echo_server(
    folder: Path,
    env: Mapping[str, str],
    client: tuple[str, str],
    workers: int,
    threads: int | None,
) -> Iterator[Target]:
    """Echo served by ``echo-identity serve`` (``threads`` ``None``: serve's default), with
    ``client`` (id, secret) as the target's client."""
    port = free_port()
    log = folder / f"echo-{workers}x{threads or 'default'}.log"
    with server(echo_serve_argv(port, workers, threads), env=env, cwd=folder, log=log) as leader:
        wait_ready(port, "/readyz", log)
        layout = "serve's default --threads" if threads is None else f"--threads {threads}"
        description = f"echo-identity serve --workers {workers} {layout}"
        yield Target("echo", port, *client, description, leader.pid)


@dataclass(frozen=True)
class Peers:
    """Echo and node-oidc-provider serving side by side, and Echo's folder and settings."""

    echo: Target
    node: Target
    node_version: str
    echo_folder: Path
    echo_env: dict[str, str]

    @property
    def database(self) -> Path | str:
        return echo_database(self.echo_folder)


@contextmanager
def echo_and_node(work: Path, args: argparse.Namespace, *, opaque: bool = False) -> Iterator[Peers]:
    """Echo in ``work``/echo with its benchmark client (``args.workers``, ``args.threads``,
    ``args.log_level``) and node-oidc-provider in ``work``/node (``args.node_modules``,
    ``args.node_processes``; ``opaque``: see :func:`node_server`)."""
    version = install_node_provider(work / "node", args.node_modules)
    folder = work / "echo"
    folder.mkdir()
    env = echo_environment(folder, args.log_level)
    client = prepare_echo(folder, env)
    with (
        echo_server(folder, env, client, args.workers, args.threads) as echo,
        node_server(work / "node", args.node_processes, opaque=opaque) as node,
    ):
        yield Peers(echo, node, version, folder, env)


# --- bare WSGI apps on granian -------------------------------------------------------------


@contextmanager
def granian_server(
    app: str,
    folder: Path,
    env: Mapping[str, str],
    *,
    workers: int,
    threads: int | None,
    ready_path: str,
    log: Path,
) -> Iterator[tuple[int, int]]:
    """``app`` (``module:callable`` in this folder) on granian (``threads`` ``None``:
    granian's default blocking threads); yields its port and process group once
    ``ready_path`` answers."""
    port = free_port()
    argv = [
        str(Path(sys.executable).with_name("granian")),
        "--interface",
        "wsgi",
        "--workers",
        str(workers),
        *(["--blocking-threads", str(threads)] if threads is not None else []),
        "--host",
        HOST,
        "--port",
        str(port),
        "--working-dir",
        str(BENCHMARKS),
        app,
    ]
    with server(argv, env={**os.environ, **env}, cwd=folder, log=log) as leader:
        wait_ready(port, ready_path, log)
        yield port, leader.pid


# --- node-oidc-provider --------------------------------------------------------------------


def install_node_provider(folder: Path, node_modules: Path | None) -> str:
    """Put ``provider.mjs`` beside an ``oidc-provider`` install in ``folder``; its version."""
    folder.mkdir()
    for name in ("package.json", "provider.mjs"):
        shutil.copy(NODE_SOURCES / name, folder / name)
    if node_modules is None:
        npm = require_tool("npm", "install Node.js 20+ with npm")
        run_command([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder)
    else:
        (folder / "node_modules").symlink_to(node_modules.resolve(), target_is_directory=True)
    manifest = folder / "node_modules" / "oidc-provider" / "package.json"
    if not manifest.exists():
        raise SystemExit(f"no oidc-provider under {folder / 'node_modules'}")
    version: str = json.loads(manifest.read_text())["version"]
    return version


@contextmanager
def node_server(folder: Path, processes: int, *, opaque: bool = False) -> Iterator[Target]:
    """node-oidc-provider (``provider.mjs``) issuing ES256 RFC 9068 JWT access tokens, or with
    ``opaque`` opaque ones (kept in its memory adapter; only those can be introspected)."""
    node = require_tool("node", "install Node.js 20+")
    port = free_port()
    client_id, client_secret = "bench", secrets.token_urlsafe(32)
    access_format = "opaque" if opaque else "jwt"
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "BENCH_ISSUER": ISSUER,
        "BENCH_PORT": str(port),
        "BENCH_CLIENT_ID": client_id,
        "BENCH_CLIENT_SECRET": client_secret,
        "BENCH_CLUSTER": str(processes),
        "BENCH_JWK_FILE": str(folder / f"signing-key-{port}.json"),
        "BENCH_ACCESS_TOKEN_FORMAT": access_format,
    }
    log = folder / f"node-{processes}-{access_format}.log"
    with server([node, "provider.mjs"], env=env, cwd=folder, log=log) as leader:
        wait_ready(port, "/.well-known/openid-configuration", log)
        kind = "one process" if processes == 1 else f"cluster of {processes} processes"
        yield Target(
            "node",
            port,
            client_id,
            client_secret,
            f"node-oidc-provider, {kind}, in-memory adapter, NODE_ENV=production, "
            f"{access_format} access tokens",
            leader.pid,
        )
