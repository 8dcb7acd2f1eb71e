"""What the HTTP benchmarks share: servers in their own process groups, wrk runs whose every
answer is checked, the command line, and the machine's description. The servers under load
(Echo, node-oidc-provider, granian apps) are set up by ``targets.py``; the audit rows a run must
have written are checked by ``audit_checks.py``.

A wrk run (:func:`load`) repeats one :class:`Call` over keep-alive connections;
``wrk_checked.lua`` counts the answers that have an expected status *and* a body (and
Location) as the call expects, and the requests it sent. When the target's process group is
known, the run waits until the server is idle before it starts, and after wrk stops until the
server is idle again (requests wrk left in flight are still answered then); the server's CPU
time over that span is the run's ``server_cpu_s``. A :class:`Run` is valid only when every
answer was a good one, no socket error or timeout happened, the safety cap did not stop it
and no check added a problem. The command line the scripts share is in ``command_line.py``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
ISSUER = "https://bench.example.test"  # never contacted; only the tokens' iss
BENCHMARKS = Path(__file__).resolve().parent
WRK_SCRIPT = BENCHMARKS / "wrk_checked.lua"
FORM = "application/x-www-form-urlencoded"
READY_TIMEOUT = 60.0
BUSY_WARNING = 10.0  # percent of all CPUs used by other processes that makes a run suspect
QUIET_POLL = 2.0
IDLE_POLL = 0.5  # seconds between two readings that must agree for a server to be idle
IDLE_CPU = 0.05  # share of one CPU under which a server counts as idle
IDLE_LIMIT = 120.0  # queued sign-ins take a while to drain
_OUR_GROUPS: set[int] = {os.getpgrp()}  # this script, wrk, and the servers' process groups


@dataclass(frozen=True)
class Target:
    """A running server, its benchmark client's credentials (empty when it has none) and its
    process group (``None``: not known, so neither idle waits nor server CPU)."""

    name: str
    port: int
    client_id: str
    client_secret: str
    description: str
    pgid: int | None = None

    @property
    def authorization(self) -> str:
        pair = f"{self.client_id}:{self.client_secret}".encode()
        return "Basic " + base64.b64encode(pair).decode()


@dataclass(frozen=True)
class Call:
    """The request wrk repeats, and what makes an answer good: a status in ``statuses``, a
    body that matches the Lua pattern ``expect`` (``string.find``; empty: any body; see
    :func:`lua_plain`) and, when ``location`` is set, that Location header."""

    path: str
    body: str
    headers: Mapping[str, str]
    expect: str = ""
    method: str = "POST"
    statuses: tuple[int, ...] = (200,)
    location: str | None = None


def lua_plain(text: str) -> str:
    """A Lua pattern that matches ``text`` literally."""
    return "".join(f"%{char}" if char in "^$()%.[]*+-?" else char for char in text)


def form_headers(authorization: str) -> dict[str, str]:
    """The headers of a form POST with ``authorization``."""
    return {"Authorization": authorization, "Content-Type": FORM}


@dataclass
class Run:
    """One wrk run against one target. ``non_200`` counts answers with another status than
    the call expects (200 for most), ``bad_body`` answers with an expected status but another
    body or Location."""

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
    ok: int = 0  # good answers
    bad_body: int = 0
    # Requests wrk did not wait for when it stopped: an upper bound (see wrk_checked.lua).
    unanswered: int = 0
    audit_rows: int | None = None  # audit rows the run wrote, when counted
    server_cpu_s: float | None = None  # from the start until the server was idle again
    cpu_ms_per_call: float | None = None  # server_cpu_s per audit row (else per answer)
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return (
            self.non_200 == 0
            and self.bad_body == 0
            and not any(self.socket_errors.values())
            and not self.capped
            and not self.problems
        )


# --- processes -----------------------------------------------------------------------------


def require_tool(name: str, hint: str) -> str:
    """The absolute path of ``name`` on PATH; exits with ``hint`` when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} not found on PATH; {hint}")
    return path


def run_command(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Run a setup command to completion (at most 5 minutes) and return its stdout."""
    done = subprocess.run(  # noqa: S603 - fixed argv built by this script
        list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


@contextmanager
def server(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group (its leader, whose pid is the group's id, is
    yielded) and stop that group (only it) on exit."""
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
        yield process
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


def _process_stats() -> Iterator[tuple[int, list[str]]]:
    """``(pid, fields of /proc/pid/stat after the command name)`` of every process."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it ended meanwhile


def cpu_ticks_by_process() -> dict[int, tuple[int, int]]:
    """``{pid: (process group, user+system clock ticks)}`` for every process in /proc."""
    return {pid: (int(f[2]), int(f[11]) + int(f[12])) for pid, f in _process_stats()}


def group_members(group: int) -> list[int]:
    """Live (not zombie) processes in process group ``group``."""
    return [pid for pid, f in _process_stats() if int(f[2]) == group and f[0] != "Z"]


def group_cpu_seconds(group: int) -> float:
    """User + system CPU seconds of the live processes of ``group`` (all their threads)."""
    ticks = sum(t for g, t in cpu_ticks_by_process().values() if g == group)
    return ticks / os.sysconf("SC_CLK_TCK")


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
    percent of the machine; the last share measured. A ``limit`` of 0 or less neither waits
    nor measures (returns 0.0); the run's own share is still measured by :func:`load`."""
    if limit <= 0:
        return 0.0
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


def settled(group: int | None, count: Callable[[], int] | None = None) -> int | None:
    """Wait until the server of process group ``group`` is idle: two readings ``IDLE_POLL``
    seconds apart agree on ``count()`` and the group used under ``IDLE_CPU`` of a CPU between
    them; then ``count()`` (``None`` without one). With ``group`` ``None`` only ``count()``
    must agree. Exits when that takes over ``IDLE_LIMIT`` seconds."""
    if group is None and count is None:
        return None
    deadline = time.monotonic() + IDLE_LIMIT

    def reading() -> tuple[int | None, float]:
        return (
            None if count is None else count(),
            0.0 if group is None else group_cpu_seconds(group),
        )

    last, cpu = reading()
    while time.monotonic() < deadline:
        time.sleep(IDLE_POLL)
        now, cpu_now = reading()
        if now == last and cpu_now - cpu <= IDLE_CPU * IDLE_POLL:
            return now
        last, cpu = now, cpu_now
    raise SystemExit(f"server not idle {IDLE_LIMIT:.0f} s after a run (count {last})")


# --- HTTP ----------------------------------------------------------------------------------


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
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers (lower-case names; a repeated one's
    values joined by newlines), body."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        received: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            received[key] = f"{received[key]}\n{value}" if key in received else value
        return response.status, received, response.read()
    finally:
        connection.close()


def http_json(port: int, method: str, path: str, **request: Any) -> tuple[int, dict[str, Any]]:
    """:func:`http_call` whose answer must be a JSON object: the status and that object;
    exits otherwise."""
    status, _, raw = http_call(port, method, path, **request)
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise SystemExit(f"{method} {path} answered {status} without a JSON object: {raw[:300]!r}")
    return status, answer


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


# --- load ----------------------------------------------------------------------------------


def load(
    wrk: str,
    target: Target,
    call: Call,
    *,
    round_number: int,
    duration: int,
    connections: int,
    threads: int,
    max_requests: int,
    quiet_wait: float,
    timeout: int = 5,
    label: str | None = None,
    served: Callable[[], int] | None = None,
) -> Run:
    """One wrk run: ``connections`` keep-alive connections for ``duration`` seconds (wrk's
    ``--timeout`` ``timeout``), each repeating ``call``; the run is named ``label`` (default:
    the target's name). ``served`` counts what the server has completed (its audit rows): it is
    read once the server is idle before and after the run, and the difference is the run's
    ``audit_rows``."""
    wait_for_quiet(quiet_wait)
    before_count = settled(target.pgid, served)
    server_before = None if target.pgid is None else group_cpu_seconds(target.pgid)
    before, started = cpu_ticks_by_process(), time.monotonic()
    env = {
        **os.environ,
        "BENCH_METHOD": call.method,
        "BENCH_BODY": call.body,
        "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in call.headers.items()),
        "BENCH_EXPECT": call.expect,
        "BENCH_EXPECT_STATUS": ",".join(str(status) for status in call.statuses),
        "BENCH_MAX_PER_THREAD": str(max(max_requests // threads, 1)),
    }
    if call.location is not None:
        env["BENCH_EXPECT_LOCATION"] = call.location
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        f"{timeout}s",
        "-s",
        str(WRK_SCRIPT),
        f"http://{HOST}:{target.port}{call.path}",
    ]
    done = subprocess.run(  # noqa: S603 - fixed argv built by this script
        argv, env=env, capture_output=True, text=True, timeout=duration + timeout + 60, check=False
    )
    others = others_cpu_percent(before, time.monotonic() - started)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    run = run_from_wrk(
        json.loads(lines[-1].removeprefix("BENCH_RESULT ")),
        target=label or target.name,
        round_number=round_number,
        max_requests=max_requests,
        others_cpu_pct=others,
    )
    after_count = settled(target.pgid, served)
    if before_count is not None and after_count is not None:
        run.audit_rows = after_count - before_count
    if target.pgid is not None and server_before is not None:
        run.server_cpu_s = round(group_cpu_seconds(target.pgid) - server_before, 3)
        answers = run.ok + run.non_200 + run.bad_body
        calls = answers if run.audit_rows is None else run.audit_rows
        run.cpu_ms_per_call = round(1000 * run.server_cpu_s / calls, 3) if calls else None
    return run


def run_from_wrk(
    result: dict[str, Any],
    *,
    target: str,
    round_number: int,
    max_requests: int,
    others_cpu_pct: float,
) -> Run:
    """A :class:`Run` from the ``BENCH_RESULT`` object ``wrk_checked.lua`` prints."""
    seconds = result["duration_us"] / 1e6
    latency = result["latency_us"]
    run = Run(
        target=target,
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
        others_cpu_pct=others_cpu_pct,
        ok=result["ok"],
        bad_body=result["bad_body"],
        unanswered=max(result["sent"] - result["responses"], 0),
    )
    # Every answer wrk counted must be one the script classified; otherwise a check was skipped.
    if result["responses"] != result["requests"]:
        run.problems.append(
            f"wrk counted {result['requests']} answers, the script {result['responses']}"
        )
    if run.ok + run.non_200 + run.bad_body != result["responses"]:
        run.problems.append("good, other-status and bad-body answers do not add up to all answers")
    return run


def summarise(runs: list[Run]) -> dict[str, Any]:
    cpu = [r.cpu_ms_per_call for r in runs if r.cpu_ms_per_call is not None]
    return {
        "median_requests_per_s": round(statistics.median(r.requests_per_s for r in runs), 1),
        "median_p99_ms": round(statistics.median(r.p99_ms for r in runs), 2),
        "median_p50_ms": round(statistics.median(r.p50_ms for r in runs), 2),
        "median_cpu_ms_per_call": round(statistics.median(cpu), 3) if cpu else None,
        "runs_requests_per_s": [r.requests_per_s for r in runs],
        "runs_p99_ms": [r.p99_ms for r in runs],
        "requests": sum(r.requests for r in runs),
        "non_200": sum(r.non_200 for r in runs),
        "bad_body": sum(r.bad_body for r in runs),
        "socket_errors": sum(sum(r.socket_errors.values()) for r in runs),
        "ok": sum(r.ok for r in runs),
        "unanswered": sum(r.unanswered for r in runs),
        "audit_rows": sum(r.audit_rows or 0 for r in runs),
        "problems": [f"round {r.round}: {p}" for r in runs for p in r.problems],
        "max_others_cpu_pct": max(r.others_cpu_pct for r in runs),
    }


def print_progress(run: Run, quiet: bool) -> None:
    if quiet:
        return
    flag = ""
    if not run.valid:
        flag = (
            f"  INVALID other statuses {run.non_200_by_status} bad bodies {run.bad_body} "
            f"errors {run.socket_errors}"
            + (" capped" if run.capped else "")
            + "".join(f"; {p}" for p in run.problems)
        )
    if run.others_cpu_pct > BUSY_WARNING:
        flag += f"  (other processes used {run.others_cpu_pct:.0f}% CPU)"
    cpu = "" if run.cpu_ms_per_call is None else f"  {run.cpu_ms_per_call:>7.2f} ms CPU/call"
    audit = "" if run.audit_rows is None else f", {run.audit_rows:,} audit rows"
    print(
        f"  round {run.round} {run.target:<15} {run.requests_per_s:>9,.1f} req/s  "
        f"p99 {run.p99_ms:>7.2f} ms{cpu}  ({run.requests:,} requests{audit}){flag}",
        flush=True,
    )


def print_run_checks(result: dict[str, Any]) -> None:
    """A report's closing lines: the runs (``result["warmups"]`` and ``result["runs"]``,
    ``asdict`` of :class:`Run`) that are not valid, and whether other processes were busy."""
    if not result["valid"]:
        print("  INVALID: a run saw bad answers, errors or an audit mismatch (see --json):")
    for row in [*result["warmups"], *result["runs"]]:
        if row["problems"] or row["non_200"] or row["bad_body"] or row["capped"]:
            print(
                f"    {row['target']} round {row['round']}: other statuses "
                f"{row['non_200_by_status']}, bad bodies {row['bad_body']}, "
                f"errors {row['socket_errors']}; {'; '.join(row['problems'])}"
            )
    if not result["quiet_machine"]:
        print(f"  WARNING: other processes used over {BUSY_WARNING:.0f}% CPU during some runs")


def runs_report(warmups: list[Run], runs: list[Run], *, checks_pass: bool = True) -> dict[str, Any]:
    """A report's verdict on its runs: ``valid`` when every run (warm-ups included) is and
    ``checks_pass`` (the script's other checks) holds; ``quiet_machine`` when other processes
    used at most ``BUSY_WARNING`` percent in every measured run; the runs themselves."""
    return {
        "valid": all(r.valid for r in [*warmups, *runs]) and checks_pass,
        "quiet_machine": all(r.others_cpu_pct <= BUSY_WARNING for r in runs),
        "warmups": [asdict(r) for r in warmups],
        "runs": [asdict(r) for r in runs],
    }


# --- the machine ---------------------------------------------------------------------------


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
