"""Sign-ins per second: Echo Identity's ``POST /login`` at its argon2id parameters, against the
raw argon2id verify rate of one process as the ceiling.

Echo runs ``echo-identity serve --workers W [--threads T]`` in production mode on SQLite, with
the production argon2id defaults (``ECHO_ARGON2_*`` unset: time cost 3, 64 MiB, parallelism 4,
read from Echo's ``Settings`` and reported). The sign-in rate limit is raised to
``ECHO_LOGIN_RATE_LIMIT=1000000/minute`` so that it never answers instead of the password check
(every request comes from 127.0.0.1). One user is made with Echo's own ``AccountService``
before the server starts.

The form: one ``GET /login`` gives the CSRF token and the anonymous cookie that carries its
secret; wrk then posts ``csrf_token``, ``username`` and the correct ``password`` with that
cookie on every connection (``wrk_checked.lua``). Every successful sign-in verifies the
password, starts a server-side session and records ``auth.login.success``; an answer is good
only when it is a 302 or 303 to ``/account`` (a refused sign-in answers the form again with
400, 401 or 429), and once the server is idle after each run the ``auth.login.success`` rows
the database gained are counted (one per good answer, plus at most one per request still in
flight when wrk stopped). Before loading, a wrong password must be refused.

Rounds alternate a wrk run against Echo with the ceiling, measured in this process:
``argon2.PasswordHasher`` with the same parameters verifying the same kind of hash in a loop for
``--argon2-seconds``; it gives verifies/s (wall) and CPU ms per verify. Reported, as medians:

- sign-ins/s, and sign-ins/s per worker (sign-ins/s ÷ ``--workers``: per core when there are
  as many workers as cores, as ``serve`` advises);
- Echo's CPU ms per sign-in (its process group's CPU time from the start of a run until it is
  idle again ÷ the sign-ins it audited) and sign-ins per CPU-second, next to the ceiling's
  verifies per CPU-second: the share of a core's work per sign-in that is not argon2.

    .venv/bin/python benchmarks/login.py [--rounds 3] [--duration 20] [--warmup 5] \
        [--connections 32] [--workers 2] [--threads T] [--argon2-seconds 5] [--json]

Needs ``wrk`` on PATH. Exits 2 when a run saw a bad response, a socket error or a timeout, or
a missing audit row; there is no floor yet.
"""

from __future__ import annotations

import argparse
import re
import secrets
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from argon2 import PasswordHasher, Type

import audit_checks  # isort: skip
import command_line  # isort: skip
import harness  # isort: skip
import targets  # isort: skip

RATE_LIMIT = "1000000/minute"  # never reached: the benchmark measures the password check
USERNAME = "loginbench"
LANDING = "/account"  # where a sign-in without ``next`` lands
ANONYMOUS_COOKIE = "__Host-echo_anon"  # production name (accounts/session_cookie.py)
WRK_TIMEOUT = 60  # seconds; queued sign-ins wait for argon2 ahead of them
SIGNED_IN = "auth.login.success"


@dataclass(frozen=True)
class Argon2Parameters:
    time_cost: int
    memory_cost: int
    parallelism: int


@dataclass(frozen=True)
class Ceiling:
    """The raw argon2id verify loop of one round."""

    round: int
    verifies: int
    seconds: float
    cpu_seconds: float

    @property
    def verifies_per_s(self) -> float:
        return round(self.verifies / self.seconds, 2)

    @property
    def cpu_ms_per_verify(self) -> float:
        return round(1000 * self.cpu_seconds / self.verifies, 2)


def seed_user(env: Mapping[str, str], password: str) -> Argon2Parameters:
    """Make the benchmark's user with Echo's own account service and password hasher (the
    settings' argon2id parameters); those parameters."""
    from echo_identity.config import load_settings
    from echo_identity.services import build_services

    settings, _ = load_settings(env)
    services = build_services(settings)
    try:
        with services.database.session() as session:
            services.accounts.service(session).create_user(
                USERNAME, f"{USERNAME}@example.org", password
            )
            session.commit()
    finally:
        services.database.dispose()
    return Argon2Parameters(
        settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism
    )


def measure_ceiling(parameters: Argon2Parameters, round_number: int, seconds: float) -> Ceiling:
    """argon2id verifies of a correct password in this process for ``seconds`` (at least 3)."""
    hasher = PasswordHasher(
        time_cost=parameters.time_cost,
        memory_cost=parameters.memory_cost,
        parallelism=parameters.parallelism,
        type=Type.ID,
    )
    password = secrets.token_urlsafe(16)
    stored = hasher.hash(password)
    verifies = 0
    started, cpu = time.monotonic(), time.process_time()
    while verifies < 3 or time.monotonic() - started < seconds:
        if not hasher.verify(stored, password):
            raise SystemExit("argon2 refused its own hash")
        verifies += 1
    return Ceiling(
        round_number,
        verifies,
        round(time.monotonic() - started, 3),
        round(time.process_time() - cpu, 3),
    )


@dataclass(frozen=True)
class LoginForm:
    """What one GET /login hands out: the anonymous cookie and the form's CSRF token."""

    cookie: str
    csrf_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": self.cookie, "Content-Type": harness.FORM}

    def body(self, password: str) -> str:
        return urlencode(
            {"csrf_token": self.csrf_token, "username": USERNAME, "password": password}
        )


def login_form(port: int) -> LoginForm:
    """GET /login: its CSRF token and anonymous cookie; exits when either is missing."""
    status, headers, raw = harness.http_call(port, "GET", "/login")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', raw)
    cookie = re.search(rf"{re.escape(ANONYMOUS_COOKIE)}=([^;]+)", headers.get("set-cookie", ""))
    if status != 200 or token is None or cookie is None:
        raise SystemExit(f"GET /login answered {status} without a form and cookie: {raw[:300]!r}")
    return LoginForm(f"{ANONYMOUS_COOKIE}={cookie.group(1)}", token.group(1).decode())


def check_login(port: int, form: LoginForm, password: str) -> dict[str, Any]:
    """The correct password signs in (302/303 to the landing page); a wrong one is refused."""
    answers = {}
    for case, sent, signs_in in (
        ("correct password", password, True),
        ("wrong password", password + "x", False),
    ):
        status, headers, raw = harness.http_call(
            port, "POST", "/login", body=form.body(sent), headers=form.headers
        )
        redirected = status in (302, 303) and headers.get("location") == LANDING
        if redirected != signs_in:
            raise SystemExit(f"POST /login with the {case} answered {status}: {raw[:300]!r}")
        answers[case] = status
    return answers


def benchmark(args: argparse.Namespace, wrk: str, work: Path) -> dict[str, Any]:
    env = {**targets.echo_environment(work, args.log_level), "ECHO_LOGIN_RATE_LIMIT": RATE_LIMIT}
    targets.migrate_echo(work, env)
    password = "pw-" + secrets.token_urlsafe(16)
    parameters = seed_user(env, password)
    options = {**command_line.load_options(args), "timeout": WRK_TIMEOUT}
    with targets.echo_server(work, env, ("", ""), args.workers, args.threads) as echo:
        form = login_form(echo.port)
        checks = check_login(echo.port, form, password)
        call = harness.Call(
            "/login", form.body(password), form.headers, statuses=(302, 303), location=LANDING
        )

        def once(number: int, duration: int) -> harness.Run:
            return audit_checks.load_audited(
                wrk,
                echo,
                call,
                targets.echo_database(work),
                SIGNED_IN,
                round_number=number,
                **{**options, "duration": duration},
            )

        warmup = once(0, args.warmup)
        runs: list[harness.Run] = []
        ceilings: list[Ceiling] = []
        for number in range(1, args.rounds + 1):
            runs.append(once(number, args.duration))
            harness.print_progress(runs[-1], args.json)
            ceilings.append(measure_ceiling(parameters, number, args.argon2_seconds))
            if not args.json:
                print(
                    f"  round {number} argon2 {ceilings[-1].verifies_per_s:>9,.2f} verifies/s  "
                    f"{ceilings[-1].cpu_ms_per_verify:.1f} ms CPU/verify (one process)",
                    flush=True,
                )
    return report_of(args, parameters, echo, checks, [warmup, *runs], ceilings)


def report_of(
    args: argparse.Namespace,
    parameters: Argon2Parameters,
    echo: harness.Target,
    checks: dict[str, Any],
    runs: list[harness.Run],
    ceilings: list[Ceiling],
) -> dict[str, Any]:
    """The report of the ``runs`` (the warm-up first) and the ceilings."""
    summary = harness.summarise(runs[1:])
    rate = summary["median_requests_per_s"]
    cpu_ms = summary["median_cpu_ms_per_call"]
    ceiling_rate = statistics.median(c.verifies_per_s for c in ceilings)
    ceiling_cpu_ms = statistics.median(c.cpu_ms_per_verify for c in ceilings)
    return {
        "benchmark": "login",
        "machine": harness.machine(),
        "argon2id": asdict(parameters),
        "rate_limit": f"ECHO_LOGIN_RATE_LIMIT={RATE_LIMIT} (raised so it never answers)",
        "load": {
            **command_line.load_report(args),
            "timeout_s": WRK_TIMEOUT,
            "request": "POST /login csrf_token, username, password (correct); anonymous cookie",
        },
        "echo": {
            "config": echo.description,
            "log_level": args.log_level or "Echo's default",
            **summary,
            "median_logins_per_s": rate,
            "median_logins_per_s_per_worker": round(rate / args.workers, 2),
            "logins_per_cpu_second": round(1000 / cpu_ms, 2) if cpu_ms else None,
        },
        "ceiling": {
            "what": "argon2.PasswordHasher.verify in one process, one thread, same parameters",
            "median_verifies_per_s": ceiling_rate,
            "median_cpu_ms_per_verify": ceiling_cpu_ms,
            "verifies_per_cpu_second": round(1000 / ceiling_cpu_ms, 2),
            "rounds": [
                {**asdict(c), "verifies_per_s": c.verifies_per_s, "cpu_ms": c.cpu_ms_per_verify}
                for c in ceilings
            ],
        },
        "per_worker_to_ceiling": round(rate / args.workers / ceiling_rate, 3),
        "cpu_per_login_to_ceiling": round(cpu_ms / ceiling_cpu_ms, 3) if cpu_ms else None,
        "checks": checks,
        **harness.runs_report(runs[:1], runs[1:]),
    }


def print_report(result: dict[str, Any]) -> None:
    echo, ceiling, load = result["echo"], result["ceiling"], result["load"]
    a2 = result["argon2id"]
    print(
        f"POST /login, median of {load['rounds']} runs ({load['connections']} connections, "
        f"{load['duration']} s each); argon2id t={a2['time_cost']} m={a2['memory_cost']} KiB "
        f"p={a2['parallelism']}; {result['rate_limit']}:"
    )
    print(
        f"  echo     {echo['median_logins_per_s']:>8.2f} sign-ins/s  "
        f"{echo['median_logins_per_s_per_worker']:>6.2f} per worker  "
        f"p50 {echo['median_p50_ms']:.0f} ms  p99 {echo['median_p99_ms']:.0f} ms  "
        f"{echo['median_cpu_ms_per_call']:.1f} ms CPU/sign-in  ({echo['config']})"
    )
    print(
        f"  argon2   {ceiling['median_verifies_per_s']:>8.2f} verifies/s in one process  "
        f"{ceiling['median_cpu_ms_per_verify']:.1f} ms CPU/verify"
    )
    print(
        f"  per worker / ceiling {result['per_worker_to_ceiling']:.3f}x; "
        f"CPU per sign-in / CPU per verify {result['cpu_per_login_to_ceiling']}x; "
        f"audit rows {echo['audit_rows']:,} for {echo['ok']:,} good responses"
    )
    harness.print_run_checks(result)


def main(argv: list[str] | None = None) -> int:
    parser = command_line.parser_of(__doc__, duration=20, warmup=5)
    parser.add_argument(
        "--argon2-seconds", type=float, default=5.0, help="seconds of the ceiling per round"
    )
    args = command_line.parse_load_arguments(parser, argv, max_duration=600)
    return command_line.exit_status(
        command_line.run_in_folder(args, "echo-login-bench-", benchmark, print_report), None
    )


if __name__ == "__main__":
    command_line.exit_with(main)
