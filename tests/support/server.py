"""The application under test, reachable over real HTTP, and the command line, both in-process.

- :func:`start_server` / :func:`running_server`: ``create_app(settings)`` served by werkzeug's
  threaded server in a daemon thread of the test process (a real URL for Authlib and httpx
  clients, raw sockets and a second Echo acting as the vault's upstream). No interpreter start,
  no import cost, no port race: the socket is bound before the app is built.
- :func:`run_cli`: ``echo-identity ARGS`` through click's ``CliRunner`` with exactly the given
  ECHO_* variables; the result has the ``returncode``/``stdout``/``stderr`` of a process.
- Real processes (``echo-identity serve`` under granian, several workers, start-up refusal)
  live in :mod:`tests.support.processes`, used by ``tests/process/`` only.

Server logs: every log record emitted while one server answers a request is routed to that
server's log (:meth:`LiveServer.logs`), rendered by the application's own redacting chain.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from click.testing import CliRunner
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wsgi import LimitedStream

from echo_identity import migrations
from echo_identity.clock import SYSTEM_CLOCK, Clock
from echo_identity.db import Database
from echo_identity.web.context import services_of
from tests.support.clock import MovableClock
from tests.support.databases import fresh_database_url
from tests.support.environment import app_environment, settings_for
from tests.support.logs import capture_into, install_test_logging

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class CliResult:
    """What a finished ``echo-identity`` invocation left: exit status and both streams."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60
) -> CliResult:
    """Run ``echo-identity ARGS`` in this process with exactly the ECHO_* variables in ``env``.

    ``timeout`` is accepted for the process runner's signature and not enforced in-process.
    An exception the command does not handle is printed to ``stderr`` (as the interpreter
    would) and gives status 1.
    """
    from echo_identity.cli import main

    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("ECHO_")}
    runner = CliRunner()
    try:
        result = runner.invoke(
            main, list(args), input=stdin, env={**unset, **env}, catch_exceptions=True
        )
    finally:
        install_test_logging()  # the command configured logging onto its captured stderr
        # A process's exit would end whatever the command left open; here, collect it, so a
        # session it never closed gives its database (and SQLite's write lock) back now.
        gc.collect()
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return CliResult(["echo-identity", *args], result.exit_code, result.stdout, stderr)


class _RequestHandler(WSGIRequestHandler):
    """One request per connection, no access log line (granian logs none either)."""

    # A request line without a version would get an HTTP/0.9 answer (no status line at all);
    # answer every request with a status line, as granian does.
    default_request_version = "HTTP/1.1"
    timeout = 15  # a client that stops sending mid-request cannot hold a thread forever

    def handle_one_request(self) -> None:
        super().handle_one_request()
        # Werkzeug keeps an HTTP/1.1 connection open even after "Connection: close"; a raw
        # client reading until the server closes would wait forever.
        self.close_connection = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


@dataclass
class LiveServer:
    """One app instance reachable at ``base_url``; ``app`` is the Flask app for test clients."""

    base_url: str
    env: dict[str, str]
    log_path: Path
    app: Flask | None = None
    clock: Clock = SYSTEM_CLOCK  # the app's
    _stop: Callable[[], None] | None = None
    _lines: list[str] = field(default_factory=list)

    def logs(self) -> str:
        if self._lines or not self.log_path.exists():
            return "\n".join(self._lines)
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events

    def log_events_once(
        self, found: Callable[[dict[str, Any]], bool], *, seconds: float = 5.0
    ) -> list[dict[str, Any]]:
        """The log events for which ``found`` holds, waiting up to ``seconds`` for at least
        one: a request's access line is written after its response was sent, so a client
        can read the log before it is there."""
        deadline = time.monotonic() + seconds
        while True:
            matching = [entry for entry in self.log_events() if found(entry)]
            if matching or time.monotonic() >= deadline:
                return matching
            time.sleep(0.02)

    def advance(self, seconds: float) -> None:
        """Move the app's clock ahead (it must be a ``MovableClock``): e.g. one second, for a
        change another process made (a CLI command) to reach the app's per-process caches
        (``echo_identity.cache``)."""
        assert isinstance(self.clock, MovableClock), "this server runs on the system clock"
        self.clock.advance(seconds)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10, **kwargs)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


def _routing_logs(app: WSGIApplication, lines: list[str]) -> WSGIApplication:
    """``app`` with every record logged while it answers (body included) going to ``lines``."""

    def wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request_body = _bounded_input(environ)
        with capture_into(lines):
            body = app(environ, start_response)
            try:
                yield from body
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
                if request_body is not None:
                    # Read what the app left unread: werkzeug would otherwise wait for the
                    # client to close its side before answering (granian does not).
                    request_body.exhaust()

    return wsgi


def _bounded_input(environ: WSGIEnvironment) -> LimitedStream | None:
    """Put the request body behind a stream bounded by Content-Length (None: no such length)."""
    if environ.get("wsgi.input_terminated"):
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    stream = LimitedStream(environ["wsgi.input"], max(length, 0))
    environ["wsgi.input"] = stream
    return stream


def ensure_signing_keys(database: Database, env: dict[str, str]) -> None:
    """What ``echo-identity serve`` does before it binds: one active key per algorithm."""
    from echo_identity.idp import keys
    from echo_identity.idp.provider import key_schedule
    from echo_identity.keys.kek_providers import keyring_factory

    settings = settings_for(env)
    keys.ensure_signing_keys(database, keyring_factory(settings), key_schedule(settings))


def start_server(
    env: dict[str, str], log_path: Path, *, migrate: bool = True, clock: Clock = SYSTEM_CLOCK
) -> LiveServer:
    """Migrate the database, build the app for ``env`` and serve it from a daemon thread.

    A development server without an explicit ``ECHO_ISSUER`` gets its own URL as issuer; the
    app reads time from ``clock`` (a test's ``MovableClock`` jumps ahead instead of sleeping).
    Raises ``ConfigError`` when ``env`` is not a valid configuration.
    """
    from echo_identity.app import create_app
    from echo_identity.services import build_services

    install_test_logging()
    http: BaseWSGIServer = make_server(
        "127.0.0.1", 0, _not_ready, threaded=True, request_handler=_RequestHandler
    )
    env.setdefault("ECHO_ISSUER", f"http://127.0.0.1:{http.server_port}")
    try:
        settings = settings_for(env)
        database = Database(settings.database_url)
        if migrate:
            migrations.upgrade(database)
        ensure_signing_keys(database, env)
        database.dispose()
        app = create_app(settings, services=build_services(settings, clock=clock))
    except BaseException:
        http.server_close()
        raise
    server = LiveServer(f"http://127.0.0.1:{http.server_port}", env, log_path, app, clock)
    http.app = _routing_logs(app, server._lines)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()

    def stop() -> None:
        http.shutdown()
        http.server_close()
        thread.join(timeout=10)
        # Its pool's connections close now, not whenever the garbage collector finds them.
        services_of(app).database.dispose()
        log_path.write_text("\n".join(server._lines) + "\n")

    server._stop = stop
    return server


def _not_ready(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]


@contextmanager
def running_server(
    tmp_dir: Path, *, production: bool = False, **extra: str
) -> Iterator[LiveServer]:
    """A server on a fresh database in ``tmp_dir``, stopped and dropped afterwards."""
    with fresh_database_url(tmp_dir) as url:
        server = start_server(
            app_environment(tmp_dir / "var", url, production=production, **extra),
            tmp_dir / "server.log",
            clock=MovableClock(),
        )
        try:
            yield server
        finally:
            server.stop()
