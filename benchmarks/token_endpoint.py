"""Token endpoint throughput: Echo Identity against node-oidc-provider on this machine.

Both servers run on loopback and are loaded by wrk with the same request: ``POST /token``,
HTTP Basic client authentication, ``grant_type=client_credentials&scope=api:read``. Each answers
with an ES256-signed RFC 9068 JWT access token; one token from each is fetched and checked against
the server's JWKS before anything is measured. Echo also looks up the client in its database and
writes one audit row to SQLite per token; node-oidc-provider stores nothing for JWT access tokens.

Runs alternate (echo, node, echo, node, ...); the report gives each server's median requests/s
and median p99 latency over the rounds, and the ratio of the medians (Echo / node). The floor is
1.0x, the goal 1.5x. A run with any non-200 response or socket error makes the result invalid.
The machine may be shared: before each run the script waits (``--quiet-wait``) until other
processes use under 10% of the CPUs, and it records and flags what they used during the run.

node-oidc-provider (npm ``oidc-provider``, latest) is installed into a temporary folder that is
removed afterwards; ``--node-modules DIR`` reuses an earlier install instead.

``--layers`` adds the stripped-down endpoints of ``stack_layers.py`` (bare WSGI, with SQLite,
Flask + Authlib, Authlib without Flask) to every round, on granian with Echo's worker settings:
how fast each layer of Echo's stack can go on this machine, next to Echo and node.

    .venv/bin/python benchmarks/token_endpoint.py [--rounds 3] [--duration 10] \
        [--connections 32] [--echo-workers 2] [--echo-threads 1] [--node-processes 1] [--json]
    .venv/bin/python benchmarks/token_endpoint.py --sweep   # Echo alone, workers x threads
    .venv/bin/python benchmarks/token_endpoint.py --layers  # + stack_layers.py endpoints

Needs ``wrk`` (Debian: ``apt-get install wrk``), ``node`` and ``npm`` on PATH. Exits with status
1 when the ratio is below the floor and 2 when a run saw errors.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet

from stack_layers import LAYERS, prepare_database, signing_jwk, uses_database  # isort: skip

FLOOR = 1.0
GOAL = 1.5
HOST = "127.0.0.1"
ISSUER = "https://bench.example.test"  # never contacted; only the tokens' iss
SCOPE = "api:read"
BODY = "grant_type=client_credentials&scope=api%3Aread"
BENCHMARKS = Path(__file__).resolve().parent
WRK_SCRIPT = BENCHMARKS / "wrk_token.lua"
NODE_SOURCES = BENCHMARKS / "node_oidc"
SWEEP_CONFIGS = ("1x1", "1x2", "1x4", "1x8", "2x1", "2x2", "2x4", "4x1")
READY_TIMEOUT = 60.0
BUSY_WARNING = 10.0  # percent of all CPUs used by other processes that makes a run suspect
QUIET_POLL = 2.0
_OUR_GROUPS: set[int] = {os.getpgrp()}  # this script, wrk, and the servers' process groups


@dataclass(frozen=True)
class Target:
    """A running token endpoint and the credentials of its benchmark client."""

    name: str
    port: int
    client_id: str
    client_secret: str
    description: str

    @property
    def authorization(self) -> str:
        pair = f"{self.client_id}:{self.client_secret}".encode()
        return "Basic " + base64.b64encode(pair).decode()


@dataclass
class Run:
    """One wrk run against one target."""

    target: str
    round: int
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_200: int
    non_200_by_status: dict[str, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    capped: bool = False
    others_cpu_pct: float = 0.0  # CPU used during the run by processes not part of it

    @property
    def valid(self) -> bool:
        return self.non_200 == 0 and not any(self.socket_errors.values()) and not self.capped


# --- processes -----------------------------------------------------------------------------


def require_tool(name: str, hint: str) -> str:
    """The absolute path of ``name`` on PATH; exits with ``hint`` when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} not found on PATH; {hint}")
    return path


def run_command(
    argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Run a setup command to completion (at most 5 minutes) and return its stdout."""
    done = subprocess.run(  # noqa: S603 - fixed argv built by this script
        list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


@contextmanager
def server(argv: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path) -> Iterator[None]:
    """Start a server in its own process group and stop that group (only it) on exit."""
    with log.open("ab") as sink:
        process = subprocess.Popen(  # noqa: S603 - fixed argv built by this script
            list(argv),
            env=env,
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _OUR_GROUPS.add(process.pid)
    try:
        yield
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group led by ``process``; SIGKILL whatever is left after 10 s.

    The whole group, not just its leader: a server's workers must not outlive it (a second
    granian server can listen on a port that a stray one still holds, and they share requests).
    """
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def cpu_ticks_by_process() -> dict[int, tuple[int, int]]:
    """``{pid: (process group, user+system clock ticks)}`` for every process in /proc."""
    ticks: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        ticks[int(entry.name)] = (int(fields[2]), int(fields[11]) + int(fields[12]))
    return ticks


def others_cpu_percent(before: dict[int, tuple[int, int]], seconds: float) -> float:
    """Share of all CPUs that processes outside this benchmark used since ``before``."""
    after = cpu_ticks_by_process()
    used = sum(
        ticks - before.get(pid, (group, 0))[1]
        for pid, (group, ticks) in after.items()
        if group not in _OUR_GROUPS
    )
    capacity = seconds * (os.cpu_count() or 1) * os.sysconf("SC_CLK_TCK")
    return round(100 * used / capacity, 1) if capacity > 0 else 0.0


def wait_for_quiet(limit: float) -> float:
    """Wait (at most ``limit`` seconds) until other processes use under ``BUSY_WARNING``
    percent of the machine; the last share measured."""
    deadline = time.monotonic() + limit
    while True:
        before = cpu_ticks_by_process()
        time.sleep(QUIET_POLL)
        busy = others_cpu_percent(before, QUIET_POLL)
        if busy <= BUSY_WARNING or time.monotonic() >= deadline:
            return busy
        print(
            f"  (other processes use {busy:.0f}% CPU; waiting for a quiet machine)",
            file=sys.stderr,
            flush=True,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def http_call(
    port: int,
    method: str,
    path: str,
    *,
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(port: int, path: str, log: Path) -> None:
    """Poll ``GET path`` until it answers 200; exits with the server log after a minute."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if http_call(port, "GET", path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"server on port {port} not ready; its log:\n{log.read_text()[-3000:]}")


# --- Echo Identity -------------------------------------------------------------------------


def echo_environment(folder: Path, log_level: str) -> dict[str, str]:
    """Production settings (https issuer, generated secrets) with SQLite under ``folder``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ECHO_")}
    env.update(
        ECHO_ISSUER=ISSUER,
        ECHO_SECRET_KEY=secrets.token_urlsafe(48),
        ECHO_VAULT_KEK=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        ECHO_DATABASE_URL=f"sqlite:///{folder / 'bench.db'}",
        ECHO_VAR_DIR=str(folder),
        ECHO_LOG_LEVEL=log_level,
    )
    return env


def prepare_echo(folder: Path, env: dict[str, str]) -> tuple[str, str]:
    """Migrate the database and register the benchmark client; its id and secret."""
    cli = str(Path(sys.executable).with_name("echo-identity"))
    run_command([cli, "db", "upgrade"], env=env, cwd=folder)
    created = json.loads(
        run_command(
            [
                cli,
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


@contextmanager
def echo_server(
    folder: Path, env: dict[str, str], client: tuple[str, str], workers: int, threads: int
) -> Iterator[Target]:
    port = free_port()
    log = folder / f"echo-{workers}x{threads}.log"
    cli = str(Path(sys.executable).with_name("echo-identity"))
    argv = [
        cli,
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
    ]
    with server(argv, env=env, cwd=folder, log=log):
        wait_ready(port, "/readyz", log)
        yield Target(
            "echo",
            port,
            *client,
            description=f"echo-identity serve --workers {workers} --threads {threads}",
        )


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
def node_server(folder: Path, processes: int) -> Iterator[Target]:
    node = require_tool("node", "install Node.js 20+")
    port = free_port()
    client_id, client_secret = "bench", secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "BENCH_ISSUER": ISSUER,
        "BENCH_PORT": str(port),
        "BENCH_CLIENT_ID": client_id,
        "BENCH_CLIENT_SECRET": client_secret,
        "BENCH_CLUSTER": str(processes),
        "BENCH_JWK_FILE": str(folder / f"signing-key-{port}.json"),
    }
    log = folder / f"node-{processes}.log"
    with server([node, "provider.mjs"], env=env, cwd=folder, log=log):
        wait_ready(port, "/.well-known/openid-configuration", log)
        kind = "one process" if processes == 1 else f"cluster of {processes} processes"
        yield Target(
            "node",
            port,
            client_id,
            client_secret,
            description=f"node-oidc-provider, {kind}, in-memory adapter, NODE_ENV=production",
        )


# --- stack layers (stack_layers.py) -------------------------------------------------------


@contextmanager
def layer_server(folder: Path, layer: str, workers: int, threads: int) -> Iterator[Target]:
    """One of ``stack_layers.py``'s stripped-down token endpoints, on granian like Echo."""
    port = free_port()
    client_id, client_secret = "bench", secrets.token_urlsafe(32)
    database = folder / f"{layer}.db"
    if uses_database(layer):
        prepare_database(str(database), client_id, client_secret)
    env = {
        **os.environ,
        "BENCH_LAYER": layer,
        "BENCH_ISSUER": ISSUER,
        "BENCH_CLIENT_ID": client_id,
        "BENCH_CLIENT_SECRET": client_secret,
        "BENCH_JWK": json.dumps(signing_jwk()),
        "BENCH_DATABASE": str(database),
    }
    argv = [
        str(Path(sys.executable).with_name("granian")),
        "--interface",
        "wsgi",
        "--workers",
        str(workers),
        "--blocking-threads",
        str(threads),
        "--host",
        HOST,
        "--port",
        str(port),
        "--working-dir",
        str(BENCHMARKS),
        "stack_layers:app",
    ]
    log = folder / f"layer-{layer}.log"
    with server(argv, env=env, cwd=folder, log=log):
        wait_ready(port, "/.well-known/openid-configuration", log)
        yield Target(
            layer,
            port,
            client_id,
            client_secret,
            description=f"stack_layers.py {layer}, granian --workers {workers} "
            f"--blocking-threads {threads}",
        )


# --- checks and load -----------------------------------------------------------------------


def check_token(target: Target, jwks_path: str) -> dict[str, Any]:
    """Fetch one token and verify it is an ES256 ``at+jwt`` signed by the target's JWKS."""
    status, raw = http_call(
        target.port,
        "POST",
        "/token",
        body=BODY,
        headers={
            "Authorization": target.authorization,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    if status != 200:
        raise SystemExit(f"{target.name}: token request answered {status}: {raw[:300]!r}")
    token = json.loads(raw)["access_token"]
    status, raw_jwks = http_call(target.port, "GET", jwks_path)
    if status != 200:
        raise SystemExit(f"{target.name}: {jwks_path} answered {status}")
    decoded = jwt.decode(token, KeySet.import_key_set(json.loads(raw_jwks)), algorithms=["ES256"])
    header = dict(decoded.header)
    if header.get("alg") != "ES256" or header.get("typ") != "at+jwt":
        raise SystemExit(f"{target.name}: token header is {header}, wanted ES256 at+jwt")
    return {"header": header, "claims": dict(decoded.claims), "token_bytes": len(token)}


def jwks_path(target: Target) -> str:
    """The path of the target's ``jwks_uri`` (whatever host discovery puts in it)."""
    discovery = "/.well-known/openid-configuration"
    status, raw = http_call(target.port, "GET", discovery)
    if status != 200:
        raise SystemExit(f"{target.name}: {discovery} answered {status}")
    uri: str = json.loads(raw)["jwks_uri"]
    return "/" + uri.split("://", 1)[-1].split("/", 1)[-1]


def load(
    wrk: str,
    target: Target,
    *,
    round_number: int,
    duration: int,
    connections: int,
    threads: int,
    max_requests: int,
    quiet_wait: float,
) -> Run:
    """One wrk run: ``connections`` keep-alive connections for ``duration`` seconds."""
    wait_for_quiet(quiet_wait)
    before, started = cpu_ticks_by_process(), time.monotonic()
    env = {
        **os.environ,
        "BENCH_AUTHORIZATION": target.authorization,
        "BENCH_BODY": BODY,
        "BENCH_MAX_PER_THREAD": str(max(max_requests // threads, 1)),
    }
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
        f"http://{HOST}:{target.port}/token",
    ]
    done = subprocess.run(  # noqa: S603 - fixed argv built by this script
        argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    others = others_cpu_percent(before, time.monotonic() - started)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    seconds = result["duration_us"] / 1e6
    latency = result["latency_us"]
    return Run(
        target=target.name,
        round=round_number,
        requests=result["requests"],
        seconds=round(seconds, 3),
        requests_per_s=round(result["requests"] / seconds, 1),
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        non_200=result["non200"],
        non_200_by_status=result["non200_by_status"],
        socket_errors={k: v for k, v in result["errors"].items() if k != "status"},
        # wrk keeps its clock running after the cap stops a thread, so a capped rate is wrong.
        capped=result["requests"] >= max_requests,
        others_cpu_pct=others,
    )


def summarise(runs: list[Run]) -> dict[str, Any]:
    return {
        "median_requests_per_s": round(statistics.median(r.requests_per_s for r in runs), 1),
        "median_p99_ms": round(statistics.median(r.p99_ms for r in runs), 2),
        "median_p50_ms": round(statistics.median(r.p50_ms for r in runs), 2),
        "runs_requests_per_s": [r.requests_per_s for r in runs],
        "runs_p99_ms": [r.p99_ms for r in runs],
        "requests": sum(r.requests for r in runs),
        "non_200": sum(r.non_200 for r in runs),
        "socket_errors": sum(sum(r.socket_errors.values()) for r in runs),
        "max_others_cpu_pct": max(r.others_cpu_pct for r in runs),
    }


def parse_config(value: str) -> tuple[int, int]:
    """``"2x4"`` -> (2 workers, 4 threads)."""
    try:
        workers, threads = (int(part) for part in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not WORKERSxTHREADS") from None
    if workers < 1 or threads < 1:
        raise argparse.ArgumentTypeError("workers and threads must be positive")
    return workers, threads


def echo_revision() -> str | None:
    """The checked-out commit (with ``+dirty`` for local changes), or ``None`` outside git."""
    git = shutil.which("git")
    if git is None:
        return None
    done = subprocess.run(  # noqa: S603 - fixed argv
        [git, "describe", "--always", "--dirty=+dirty"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout.strip() or None


def machine() -> dict[str, Any]:
    node = shutil.which("node")
    node_version = run_command([node, "--version"]).strip() if node else None
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = models[0].split(":", 1)[1].strip() if models else ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "node": node_version,
        "echo_revision": echo_revision(),
    }


# --- modes -----------------------------------------------------------------------------------


def _load_options(args: argparse.Namespace) -> dict[str, Any]:
    """How wrk loads a server (recorded in the report as given)."""
    return {
        "duration": args.duration,
        "connections": args.connections,
        "threads": args.wrk_threads,
        "max_requests": args.max_requests,
        "quiet_wait": args.quiet_wait,
    }


def compare(args: argparse.Namespace, wrk: str, work: Path) -> dict[str, Any]:
    """Echo against node-oidc-provider, alternating rounds."""
    version = install_node_provider(work / "node", args.node_modules)
    echo_folder = work / "echo"
    echo_folder.mkdir()
    env = echo_environment(echo_folder, args.echo_log_level)
    client = prepare_echo(echo_folder, env)
    load_options = _load_options(args)
    with contextlib.ExitStack() as servers:
        echo = servers.enter_context(
            echo_server(echo_folder, env, client, args.echo_workers, args.echo_threads)
        )
        node = servers.enter_context(node_server(work / "node", args.node_processes))
        layers = [
            servers.enter_context(
                layer_server(echo_folder, layer, args.echo_workers, args.echo_threads)
            )
            for layer in args.layers
        ]
        targets = (echo, node, *layers)
        checks = {t.name: check_token(t, jwks_path(t)) for t in targets}
        for target in targets:  # warm-up, discarded
            load(wrk, target, round_number=0, **{**load_options, "duration": args.warmup})
        runs: list[Run] = []
        for number in range(1, args.rounds + 1):
            for target in targets:
                runs.append(load(wrk, target, round_number=number, **load_options))
                print_progress(runs[-1], args.json)
    summary = {t.name: summarise([r for r in runs if r.target == t.name]) for t in targets}
    node_rate = summary["node"]["median_requests_per_s"]
    ratio = summary["echo"]["median_requests_per_s"] / node_rate
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
        "machine": machine(),
        "oidc_provider": version,
        "load": {**load_options, "generator": "wrk", "warmup": args.warmup, "body": BODY},
        "echo": {"config": echo.description, "log_level": args.echo_log_level, **summary["echo"]},
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
        "floor": FLOOR,
        "goal": GOAL,
        "meets_floor": ratio >= FLOOR,
        "meets_goal": ratio >= GOAL,
        "valid": all(r.valid for r in runs),
        "quiet_machine": all(r.others_cpu_pct <= BUSY_WARNING for r in runs),
        "token_checks": checks,
        "runs": [asdict(r) for r in runs],
    }


def sweep(args: argparse.Namespace, wrk: str, work: Path) -> dict[str, Any]:
    """Echo alone under each workers x threads configuration, ``rounds`` runs each."""
    env = echo_environment(work, args.echo_log_level)
    client = prepare_echo(work, env)
    load_options = _load_options(args)
    rows = []
    runs: list[Run] = []
    for workers, threads in args.configs:
        with echo_server(work, env, client, workers, threads) as echo:
            check_token(echo, jwks_path(echo))
            load(wrk, echo, round_number=0, **{**load_options, "duration": args.warmup})
            these = [
                load(wrk, echo, round_number=n, **load_options) for n in range(1, args.rounds + 1)
            ]
        runs.extend(these)
        rows.append({"workers": workers, "threads": threads, **summarise(these)})
        if not args.json:
            row = rows[-1]
            print(
                f"  echo {workers}x{threads}: {row['median_requests_per_s']:>8,.0f} req/s  "
                f"p99 {row['median_p99_ms']:>7.2f} ms  runs {row['runs_requests_per_s']}  "
                f"(others' CPU: up to {row['max_others_cpu_pct']:.0f}%)"
            )
    return {
        "benchmark": "token_endpoint_sweep",
        "machine": machine(),
        "load": {**load_options, "generator": "wrk", "warmup": args.warmup},
        "log_level": args.echo_log_level,
        "configs": rows,
        "valid": all(r.valid for r in runs),
    }


def print_progress(run: Run, quiet: bool) -> None:
    if quiet:
        return
    flag = (
        ""
        if run.valid
        else (f"  INVALID non-200 {run.non_200_by_status} errors {run.socket_errors}")
    )
    if run.others_cpu_pct > BUSY_WARNING:
        flag += f"  (other processes used {run.others_cpu_pct:.0f}% CPU)"
    print(
        f"  round {run.round} {run.target:<4}  {run.requests_per_s:>9,.1f} req/s  "
        f"p99 {run.p99_ms:>7.2f} ms  ({run.requests:,} requests){flag}",
        flush=True,
    )


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
        f"{result['oidc_provider']} ({verdict}: floor {FLOOR}x, goal {GOAL}x); "
        f"per round {result['ratio_per_round']}"
    )
    if not result["valid"]:
        print("  INVALID: some run saw non-200 responses or socket errors (see --json)")
    if not result["quiet_machine"]:
        print(f"  WARNING: other processes used over {BUSY_WARNING:.0f}% CPU during some runs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (>= 3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of discarded warm-up")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--max-requests", type=int, default=1_000_000, help="safety cap on requests per run"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="seconds to wait before each run for other processes to go quiet",
    )
    parser.add_argument("--echo-workers", type=int, default=2)
    parser.add_argument("--echo-threads", type=int, default=1)
    parser.add_argument(
        "--echo-log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--node-processes", type=int, default=1, help="1, or a cluster of N")
    parser.add_argument(
        "--node-modules", type=Path, default=None, help="reuse this node_modules (skip npm)"
    )
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
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    # --layers without names means all of them; without --layers, none.
    args.layers = list(LAYERS) if args.layers == [] else (args.layers or [])
    if args.rounds < 3 and not args.sweep:
        parser.error("--rounds must be at least 3")
    if min(args.duration, args.warmup, args.connections, args.wrk_threads) < 1:
        parser.error("--duration, --warmup, --connections and --wrk-threads must be positive")
    if args.duration > 600 or args.rounds > 50:
        parser.error("keep runs bounded: --duration <= 600 and --rounds <= 50")

    wrk = require_tool("wrk", "install it with: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="echo-token-bench-"))
    try:
        result = sweep(args, wrk, work) if args.sweep else compare(args, wrk, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(result, indent=2))
    elif not args.sweep:
        report(result)
    if not result["valid"]:
        return 2
    return 0 if args.sweep or result["meets_floor"] else 1


if __name__ == "__main__":
    sys.exit(main())
