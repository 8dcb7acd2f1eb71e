"""Wall time of ``echo-identity --help`` and ``echo-identity users --help``, against
``python -c pass`` on the same interpreter (the floor: starting Python at all).

Each command runs ``--runs`` times (default 10) after one discarded run, alternating
(floor, ``--help``, ``users --help``, floor, ...), with the ``ECHO_*`` variables removed from
its environment; a run counts only if it exits 0 and, for the CLI, prints its usage. The report
gives each command's median and fastest wall time, the median's excess over the floor's, and the
CPU time (user + system) of the median run. ``--imports`` also prints the slowest top-level
imports of each CLI command (``python -X importtime``).

    .venv/bin/python benchmarks/cli_help.py [--runs 10] [--imports] [--json]

Exits 2 when a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLI = str(Path(sys.executable).with_name("echo-identity"))
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "echo-identity --help": [CLI, "--help"],
    "echo-identity users --help": [CLI, "users", "--help"],
}
FLOOR = "python -c pass"
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


@dataclass(frozen=True)
class Timing:
    wall_ms: float
    cpu_ms: float


def clean_environment() -> dict[str, str]:
    """This environment without ``ECHO_*``: ``--help`` must not depend on settings."""
    return {key: value for key, value in os.environ.items() if not key.startswith("ECHO_")}


def time_command(name: str, argv: Sequence[str], env: dict[str, str]) -> Timing:
    """One run of ``argv``: its wall time and CPU time; exits when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - fixed argv built by this script
        list(argv), env=env, capture_output=True, text=True, timeout=120, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or (name != FLOOR and "Usage:" not in done.stdout):
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Timing(round(wall * 1000, 1), round(cpu * 1000, 1))


def slowest_imports(
    argv: Sequence[str], env: dict[str, str], count: int = 12
) -> list[dict[str, Any]]:
    """The modules ``argv`` (a CLI command) imports with the largest cumulative import time,
    top-level ones (imported by the command itself) and those they import directly."""
    done = subprocess.run(  # noqa: S603 - fixed argv built by this script
        [sys.executable, "-X", "importtime", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    rows: list[tuple[float, str, int]] = []
    for line in done.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and len(match.group(3)) <= 3:  # depth 1 or 2 (two spaces per level)
            depth = 1 + (len(match.group(3)) - 1) // 2
            rows.append((int(match.group(2)) / 1000, match.group(4), depth))
    rows.sort(reverse=True)
    return [{"module": m, "depth": d, "cumulative_ms": ms} for ms, m, d in rows[:count]]


def benchmark(runs: int, imports: bool) -> dict[str, Any]:
    env = clean_environment()
    for name, argv in COMMANDS.items():  # warm-up: file system caches, .pyc files
        time_command(name, argv, env)
    timings: dict[str, list[Timing]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, argv in COMMANDS.items():
            timings[name].append(time_command(name, argv, env))
    floor = statistics.median(t.wall_ms for t in timings[FLOOR])
    commands = {}
    for name, measured in timings.items():
        median = statistics.median(t.wall_ms for t in measured)
        commands[name] = {
            "argv": COMMANDS[name],
            "median_ms": round(median, 1),
            "min_ms": min(t.wall_ms for t in measured),
            "median_cpu_ms": statistics.median(t.cpu_ms for t in measured),
            "over_floor_ms": round(median - floor, 1),
            "runs_ms": [t.wall_ms for t in measured],
        }
    result: dict[str, Any] = {
        "benchmark": "cli_help",
        "python": sys.executable,
        "cpus": os.cpu_count(),
        "runs": runs,
        "commands": commands,
        "valid": True,
    }
    if imports:
        result["slowest_imports"] = {
            name: slowest_imports(COMMANDS[name], env) for name in COMMANDS if name != FLOOR
        }
    return result


def print_report(result: dict[str, Any]) -> None:
    print(f"CLI start-up, median of {result['runs']} alternating runs ({result['python']}):")
    print(f"  {'':28} {'median ms':>10} {'min ms':>8} {'CPU ms':>8} {'over floor':>11}")
    for name, row in result["commands"].items():
        print(
            f"  {name:28} {row['median_ms']:>10.1f} {row['min_ms']:>8.1f} "
            f"{row['median_cpu_ms']:>8.1f} {row['over_floor_ms']:>+10.1f}"
        )
    for name, rows in result.get("slowest_imports", {}).items():
        print(f"  slowest imports of {name} (python -X importtime, cumulative):")
        for row in rows:
            indent = "  " * row["depth"]
            print(
                f"    {indent}{row['module']:<{50 - len(indent)}} {row['cumulative_ms']:>8.1f} ms"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each command")
    parser.add_argument("--imports", action="store_true", help="list the slowest imports")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 1000:
        parser.error("--runs must be 1-1000")
    result = benchmark(args.runs, args.imports)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit as stop:
        if isinstance(stop.code, str):  # a command failed
            print(stop.code, file=sys.stderr)
            sys.exit(2)
        raise
