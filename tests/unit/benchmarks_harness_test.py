"""The benchmarks' own checks (benchmarks/harness.py, audit_checks.py, wrk_checked.lua,
audit_durability.py): a run is invalid when an answer has another status, body or Location
than its call expects, or when an audit row is missing; a lost row is named."""

from __future__ import annotations

import importlib
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from echo_identity.crypto.digests import fingerprint

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
WRK = shutil.which("wrk")
needs_wrk = pytest.mark.skipif(WRK is None, reason="needs wrk on PATH")


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    """The benchmark modules (they import each other by name, from their folder)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return {
        name: importlib.import_module(name)
        for name in ("harness", "audit_checks", "command_line", "audit_durability")
    }


def _audit_database(path: Path, rows: list[tuple[str, str, str | None]]) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE audit_events (id INTEGER PRIMARY KEY, event_type TEXT, outcome TEXT, "
            "token_fingerprint TEXT)"
        )
        connection.executemany(
            "INSERT INTO audit_events (event_type, outcome, token_fingerprint) VALUES (?, ?, ?)",
            rows,
        )
    connection.close()
    return path


def test_audit_mismatch_names_answers_without_a_row_and_rows_without_a_request(
    bench: dict[str, ModuleType],
) -> None:
    audit_mismatch = bench["audit_checks"].audit_mismatch
    assert audit_mismatch(rows=10, answered=10, unanswered=0) is None
    # requests wrk stopped waiting for may have been served: up to that many extra rows
    assert audit_mismatch(rows=12, answered=10, unanswered=2) is None
    assert "1 of 10 good answers have no audit row" in audit_mismatch(
        rows=9, answered=10, unanswered=5
    )
    assert "1 audit rows more than requests served" in audit_mismatch(
        rows=13, answered=10, unanswered=2
    )


def test_count_events_counts_only_successful_rows_of_the_type(
    bench: dict[str, ModuleType], tmp_path: Path
) -> None:
    database = _audit_database(
        tmp_path / "audit.db",
        [
            ("oauth.token.verified", "success", None),
            ("oauth.token.verified", "success", None),
            ("oauth.token.verified", "failure", None),
            ("oauth.token.issued", "success", None),
        ],
    )

    assert bench["audit_checks"].count_events(database, "oauth.token.verified") == 2


def _wrk_result(**changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "requests": 10,
        "duration_us": 1_000_000,
        "sent": 12,
        "responses": 10,
        "ok": 10,
        "non200": 0,
        "non200_by_status": {},
        "bad_body": 0,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
        "latency_us": {"p50": 1000, "p90": 2000, "p99": 3000, "max": 4000, "mean": 1200.0},
    }
    return {**result, **changes}


def test_a_run_with_a_bad_body_or_an_unclassified_answer_is_invalid(
    bench: dict[str, ModuleType],
) -> None:
    def run(**changes: Any) -> Any:
        return bench["harness"].run_from_wrk(
            _wrk_result(**changes),
            target="echo",
            round_number=1,
            max_requests=1000,
            others_cpu_pct=0.0,
        )

    good = run()
    assert good.valid
    assert good.unanswered == 2
    assert not run(ok=9, bad_body=1).valid
    assert not run(requests=11).valid  # wrk saw an answer the script did not check
    assert not run(ok=9).valid  # an answer neither good nor counted as bad
    assert not run(requests=1000, responses=1000, ok=1000).valid  # the safety cap stopped it


def test_tokens_without_row_names_an_answered_token_missing_from_the_trail(
    bench: dict[str, ModuleType], tmp_path: Path
) -> None:
    database = _audit_database(
        tmp_path / "audit.db",
        [
            ("oauth.token.issued", "success", fingerprint("kept-token")),
            ("oauth.token.verified", "success", fingerprint("lost-token")),  # not an issue row
        ],
    )

    missing = bench["audit_durability"].tokens_without_row(database, ["kept-token", "lost-token"])

    assert missing == [fingerprint("lost-token")]


def test_settled_waits_until_the_count_and_the_servers_cpu_stop_moving(
    bench: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = bench["harness"]
    monkeypatch.setattr(harness, "IDLE_POLL", 0.0)
    counts = iter([1, 2, 3, 3, 3, 3, 3, 3])
    # the count stops at 3 while the server still works: idle only once its CPU stops too
    cpu = iter([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 99.0])
    monkeypatch.setattr(harness, "group_cpu_seconds", lambda group: next(cpu))

    assert harness.settled(4242, lambda: next(counts)) == 3
    assert next(cpu) == 99.0  # it read the CPU until two readings agreed, and no further


def test_settled_gives_up_on_a_server_that_never_goes_idle(
    bench: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = bench["harness"]
    monkeypatch.setattr(harness, "IDLE_POLL", 0.0)
    monkeypatch.setattr(harness, "IDLE_LIMIT", 0.05)
    rows = iter(range(10**9))

    with pytest.raises(SystemExit, match="not idle"):
        harness.settled(None, lambda: next(rows))


def test_exit_status_puts_errors_before_the_bar(bench: dict[str, ModuleType]) -> None:
    exit_status = bench["command_line"].exit_status

    assert exit_status({"valid": True, "meets_bar": True}, "meets_bar") == 0
    assert exit_status({"valid": True, "meets_bar": False}, "meets_bar") == 1
    assert exit_status({"valid": False, "meets_bar": True}, "meets_bar") == 2
    assert exit_status({"valid": True}, None) == 0


def test_load_arguments_refuse_unbounded_or_empty_runs(bench: dict[str, ModuleType]) -> None:
    command_line = bench["command_line"]

    def parse(*argv: str, **bounds: int) -> Any:
        parser = command_line.parser_of("test", prefix="echo-")
        return command_line.parse_load_arguments(parser, [*argv, "--echo-threads", "2"], **bounds)

    args = parse("--rounds", "1", "--echo-workers", "3")
    assert (args.rounds, args.workers, args.threads) == (1, 3, 2)
    for argv, bounds in (
        (["--rounds", "51"], {}),
        (["--rounds", "2"], {"min_rounds": 3}),
        (["--duration", "0"], {}),
        (["--duration", "301"], {"max_duration": 300}),
        (["--connections", "0"], {}),
    ):
        with pytest.raises(SystemExit):
            parse(*argv, **bounds)


# --- wrk against a server that answers as told -----------------------------------------------


@dataclass
class Script:
    """What the fake server answers, in turn, and what it writes per answer."""

    answers: list[tuple[int, dict[str, str], bytes]]
    cookie: str | None = None  # when set, a request without this Cookie header gets a 400
    audit_database: Path | None = None
    audit_every: int = 1  # write a row for every n-th answer
    cpu_per_answer: float = 0.0  # seconds of pretend server CPU per answer
    answered: int = 0
    cpu: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Scripted(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
    script: Script

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        script = self.script
        with script.lock:
            number = script.answered
            script.answered += 1
            script.cpu += script.cpu_per_answer
            if script.audit_database is not None and number % script.audit_every == 0:
                with sqlite3.connect(script.audit_database) as connection:
                    connection.execute(
                        "INSERT INTO audit_events (event_type, outcome) VALUES (?, 'success')",
                        ("bench.call",),
                    )
                connection.close()
        status, headers, body = script.answers[number % len(script.answers)]
        if script.cookie is not None and self.headers.get("Cookie") != script.cookie:
            status, headers, body = 400, {}, b"no cookie"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read the answers, not the server's log."""


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(script)``: a server answering as ``script`` says; its port."""
    servers: list[ThreadingHTTPServer] = []
    threads: list[threading.Thread] = []

    def start(script: Script) -> int:
        handler = type("Handler", (_Scripted,), {"script": script})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append(httpd)
        threads.append(thread)
        return int(httpd.server_address[1])

    yield start
    for httpd, thread in zip(servers, threads, strict=True):
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _load(harness: ModuleType, port: int, call: Any, **options: Any) -> Any:
    target = harness.Target("fake", port, "client", "secret", "a test server")
    return harness.load(WRK, target, call, **_ONE_CONNECTION, **options)


# One connection: the n-th answer is the server's n-th. Capped well above what a second gives.
_ONE_CONNECTION = {
    "round_number": 1,
    "duration": 1,
    "connections": 1,
    "threads": 1,
    "max_requests": 1_000_000,
    "quiet_wait": 0,
}
_JSON = {"Content-Type": "application/json"}


@needs_wrk
def test_wrk_script_checks_every_answer_status_and_body(
    bench: dict[str, ModuleType], serve: Any
) -> None:
    harness = bench["harness"]
    port = serve(
        Script(
            [
                (200, _JSON, b'{"access_token": "x"}'),
                (200, _JSON, b'{"error": "no"}'),
                (401, _JSON, b"{}"),
            ]
        )
    )
    call = harness.Call("/token", "grant_type=x", {}, '"access_token"%s*:%s*"')

    run = _load(harness, port, call)

    answers = run.ok + run.bad_body + run.non_200
    assert answers == run.requests > 0
    assert run.ok == len(range(0, answers, 3))
    assert run.bad_body == len(range(1, answers, 3))
    assert run.non_200_by_status == {"401": len(range(2, answers, 3))}
    assert not run.valid


@needs_wrk
def test_a_plain_expected_body_is_matched_literally_not_as_a_pattern(
    bench: dict[str, ModuleType], serve: Any
) -> None:
    harness = bench["harness"]
    # As a Lua pattern "gho_a-b.c" also matches "gho_bXc" ("a-": no "a", ".": any character).
    port = serve(Script([(200, _JSON, b'{"access_token": "gho_a-b.c"}'), (200, _JSON, b"gho_bXc")]))
    call = harness.Call("/t", "{}", {}, harness.lua_plain("gho_a-b.c"))

    run = _load(harness, port, call)

    assert run.ok == len(range(0, run.requests, 2)) > 0
    assert run.bad_body == len(range(1, run.requests, 2)) > 0


@needs_wrk
def test_a_call_sends_its_headers_and_wants_its_statuses_and_location(
    bench: dict[str, ModuleType], serve: Any
) -> None:
    harness = bench["harness"]
    port = serve(
        Script(
            [
                (302, {"Location": "/account"}, b""),
                (303, {"Location": "/account"}, b""),
                (302, {"Location": "/elsewhere"}, b""),
                (200, {}, b"the form again"),
            ],
            cookie="anon=secret",
        )
    )
    call = harness.Call(
        "/login",
        "csrf_token=t",
        {"Cookie": "anon=secret", "Content-Type": harness.FORM},
        statuses=(302, 303),
        location="/account",
    )

    run = _load(harness, port, call)

    assert run.requests > 0
    assert run.ok == len(range(0, run.requests, 4)) + len(range(1, run.requests, 4))
    assert run.bad_body == len(range(2, run.requests, 4))  # another Location
    assert run.non_200_by_status == {"200": len(range(3, run.requests, 4))}  # no "400": the cookie


@needs_wrk
@pytest.mark.parametrize("audit_every", [1, 2])
def test_load_audited_wants_one_row_per_good_answer_and_measures_cpu_per_call(
    bench: dict[str, ModuleType],
    serve: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    audit_every: int,
) -> None:
    harness, audit_checks = bench["harness"], bench["audit_checks"]
    database = _audit_database(tmp_path / "audit.db", [])
    script = Script(
        [(200, _JSON, b'{"access_token": "x"}')],
        audit_database=database,
        audit_every=audit_every,
        cpu_per_answer=0.002,
    )
    port = serve(script)
    monkeypatch.setattr(harness, "IDLE_POLL", 0.1)
    monkeypatch.setattr(harness, "group_cpu_seconds", lambda group: script.cpu)
    target = harness.Target("fake", port, "", "", "a test server", pgid=4242)
    call = harness.Call("/token", "x", {}, '"access_token"')

    run = audit_checks.load_audited(WRK, target, call, database, "bench.call", **_ONE_CONNECTION)

    assert run.ok == run.requests > 0
    if audit_every == 1:
        assert run.valid, run.problems
        assert run.audit_rows >= run.ok
        assert run.cpu_ms_per_call == pytest.approx(2.0)
    else:
        assert not run.valid
        assert "good answers have no audit row" in run.problems[0]
