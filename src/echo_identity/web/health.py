"""Liveness and readiness probes.

- ``GET /healthz`` — liveness: the process answers. It checks nothing else, so an outage of a
  store never gets a healthy process restarted.
- ``GET /readyz`` — readiness: every store the instance depends on answers within
  :data:`PROBE_TIMEOUT` seconds: the database and, when ``ECHO_REDIS_URL`` is set, Redis
  (browser sessions and rate-limit counters live there; without it every sign-in and token
  request fails). 503 names the store that is down, so a load balancer drains the instance, and
  the answer is 200 again by itself once the store is back::

      {"status": "unavailable", "checks": {"database": "ok", "redis": "unavailable"}}

  Never an address, a URL or an error text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis
from flask import Blueprint, Flask, Response, jsonify
from redis.backoff import NoBackoff
from redis.retry import Retry

from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.web.context import service

PROBE_TIMEOUT = 1.0
bp = Blueprint("health", __name__)


class _Attempt:
    """One run of a check on a daemon thread (a hung check must never hold up shutdown)."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self.finished = threading.Event()
        self.ok = False
        threading.Thread(target=self._run, args=(check,), name="readiness", daemon=True).start()

    def _run(self, check: Callable[[], bool]) -> None:
        try:
            self.ok = bool(check())
        except Exception:  # any error means "not ready"; the reason is the store's to report
            self.ok = False
        finally:
            self.finished.set()


class StoreProbe:
    """Whether one store answers, asked with a deadline.

    At most one check per store is in flight: while one hangs (a black-holed connection), later
    probes wait on that same check instead of starting more threads.
    """

    def __init__(self, check: Callable[[], bool]) -> None:
        self._check = check
        self._lock = threading.Lock()
        self._attempt: _Attempt | None = None

    def start(self) -> _Attempt:
        with self._lock:
            if self._attempt is None or self._attempt.finished.is_set():
                self._attempt = _Attempt(self._check)
            return self._attempt


class Readiness:
    """The probes of every store this instance depends on, built once per app."""

    def __init__(self, probes: dict[str, StoreProbe], timeout: float = PROBE_TIMEOUT) -> None:
        self.probes = probes
        self.timeout = timeout

    def checks(self) -> dict[str, str]:
        """``{store: "ok" or "unavailable"}`` within ``timeout`` seconds (probes run at once)."""
        attempts = {name: probe.start() for name, probe in self.probes.items()}
        deadline = time.monotonic() + self.timeout
        results = {}
        for name, attempt in attempts.items():
            attempt.finished.wait(max(0.0, deadline - time.monotonic()))
            results[name] = "ok" if attempt.finished.is_set() and attempt.ok else "unavailable"
        return results


def redis_probe(url: str, timeout: float = PROBE_TIMEOUT) -> StoreProbe:
    """A PING on a client of its own: short timeouts, no retries (a probe must answer fast)."""
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return StoreProbe(lambda: bool(client.ping()))


def readiness_for(settings: Settings, database: Database) -> Readiness:
    """The probes of ``database`` and, when ``ECHO_REDIS_URL`` is set, of Redis."""
    probes = {"database": StoreProbe(database.ping)}
    if settings.redis_url:
        probes["redis"] = redis_probe(settings.redis_url)
    return Readiness(probes)


def init_app(app: Flask) -> None:
    """Register ``/healthz`` and ``/readyz`` (the probes are the app's :class:`Readiness`)."""
    app.register_blueprint(bp)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive and answering; checks nothing else."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready to serve: every store answers. 503 otherwise, so load balancers drain us."""
    checks = service(Readiness).checks()
    if all(state == "ok" for state in checks.values()):
        return jsonify(status="ready", checks=checks), 200
    return jsonify(status="unavailable", checks=checks), 503
