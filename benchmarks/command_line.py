"""The command line the HTTP benchmarks share: how the runs go and how Echo is served, the
temporary folder a benchmark runs in, its report, and its exit status (0: meets its bar, 1:
below it, 2: a run saw errors or a check failed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from harness import require_tool  # isort: skip


def parser_of(
    doc: str | None,
    *,
    duration: int = 10,
    warmup: int = 3,
    prefix: str = "",
    node: bool = False,
) -> argparse.ArgumentParser:
    """A script's parser (described by the first line of its ``doc``) with the options of how
    the runs go, how Echo is served (``--{prefix}workers``, ``--{prefix}threads``,
    ``--{prefix}log-level``; read as ``args.workers`` ...), with ``node`` those of
    node-oidc-provider (:func:`targets.echo_and_node`), and of the output."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (1-50)")
    parser.add_argument("--duration", type=int, default=duration, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=warmup, help="seconds of discarded warm-up")
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
    parser.add_argument(f"--{prefix}workers", dest="workers", type=int, default=2)
    parser.add_argument(
        f"--{prefix}threads",
        dest="threads",
        type=int,
        default=None,
        help="threads per worker (default: echo-identity serve's default)",
    )
    parser.add_argument(
        f"--{prefix}log-level",
        dest="log_level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: Echo's default level (the issue's acceptance is measured at it)",
    )
    if node:
        parser.add_argument("--node-processes", type=int, default=1, help="1, or a cluster of N")
        parser.add_argument(
            "--node-modules", type=Path, default=None, help="reuse this node_modules (skip npm)"
        )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def parse_load_arguments(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    *,
    max_duration: int = 600,
    min_rounds: int = 1,
) -> argparse.Namespace:
    """The parsed options (``--threads`` defaults to serve's); exits on unusable ones."""
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = serve_default_threads()
    counts = (args.duration, args.warmup, args.connections, args.wrk_threads, args.workers)
    if min(*counts, args.threads) < 1:
        parser.error("counts, durations, workers and threads must be positive")
    if not min_rounds <= args.rounds <= 50:
        parser.error(f"--rounds must be between {min_rounds} and 50 (the report gives medians)")
    if args.duration > max_duration:
        parser.error(f"keep runs bounded: --duration <= {max_duration}")
    return args


def serve_default_threads() -> int:
    """The ``--threads`` default of ``echo-identity serve`` (given to the bare layers too)."""
    from echo_identity.cli.serve import serve  # only here: the CLI is heavy

    default = next(p.default for p in serve.params if p.name == "threads")
    if not isinstance(default, int):
        raise SystemExit(f"echo-identity serve has no fixed --threads default ({default!r})")
    return default


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`load`'s wrk settings from the options (recorded in the reports as given)."""
    return {
        "duration": args.duration,
        "connections": args.connections,
        "threads": args.wrk_threads,
        "max_requests": args.max_requests,
        "quiet_wait": args.quiet_wait,
    }


def load_report(args: argparse.Namespace) -> dict[str, Any]:
    """How the runs went, for a report: :func:`load_options`, the warm-up and the rounds."""
    return {**load_options(args), "generator": "wrk", "warmup": args.warmup, "rounds": args.rounds}


def run_in_folder(
    args: argparse.Namespace,
    prefix: str,
    benchmark: Callable[[argparse.Namespace, str, Path], dict[str, Any]],
    print_report: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """``benchmark(args, wrk, folder)`` in a temporary folder (removed unless ``--keep``); its
    result printed as JSON (``--json``) or by ``print_report``."""
    wrk = require_tool("wrk", "install it with: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        result = benchmark(args, wrk, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return result


def exit_with(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status; a failed setup or check (``SystemExit`` with a message)
    exits 2, like a run with errors: it is no verdict on speed."""
    try:
        sys.exit(main())
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            sys.exit(2)
        raise


def exit_status(result: dict[str, Any], bar: str | None) -> int:
    """2 when ``result`` is not valid, 1 when ``result[bar]`` is false (below the bar), else 0
    (``bar`` ``None``: there is no bar)."""
    if not result["valid"]:
        return 2
    return 0 if bar is None or result[bar] else 1
