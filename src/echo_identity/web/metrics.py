"""``/metrics`` in the Prometheus text format: HTTP request counters, plus whatever collectors
the app registers (the audit trail's sign-in, token, vault and alert counters:
``audit.counters.AuditCounters``). This layer imports no domain: collectors and the token
check are handed in by the app.

HTTP request counters live in the process (prometheus-client). With several workers,
prometheus-client's multiprocess mode sums every worker's values at scrape time from files in
``PROMETHEUS_MULTIPROC_DIR``, which ``echo-identity serve`` provides (``cli/serve.py``
``_metrics_directory``). prometheus-client reads that variable when it is imported, before
settings exist, which is why it is not an ``ECHO_*`` setting.

Access: Keycloak and Ory Hydra serve metrics on a separate management/admin listener without
authentication. Echo Identity has one listener, so ``/metrics`` needs ``ECHO_METRICS_TOKEN``
as a Bearer token when that is set (checked and refused the identity provider's way, through
the ``check_token`` the app passes); without it ``/metrics`` is open in development and not
served (404) in production.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from flask import Blueprint, Flask, Response, abort, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from echo_identity.config import Settings

REFUSAL_DESCRIPTION = "Send ECHO_METRICS_TOKEN as a Bearer token."
TokenCheck = Callable[[str, str], Response | None]
"""``check_token(expected, description)``: ``None`` when the request's Bearer credential is
``expected``, else the refusal to answer with (naming ``description``)."""

# Created unregistered: each app registers them in its own registry (single process), or
# prometheus-client's multiprocess files carry them (several workers).
REQUESTS = Counter(
    "echo_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["method", "route", "status"],
    registry=None,
)
LATENCY = Histogram(
    "echo_http_request_duration_seconds",
    "Time to answer HTTP requests, by route template.",
    ["route"],
    registry=None,
)


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def registry_of(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry with the HTTP counters (this process's, or every worker's) and
    ``collectors``."""
    registry = CollectorRegistry(auto_describe=False)
    if _multiprocess():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
    for collector in collectors:
        registry.register(collector)
    return registry


# The children of REQUESTS and LATENCY by label values, as prometheus-client keeps them, minus
# its lock and label checks on every request: routes, methods and statuses are few.
_counted: dict[tuple[str, str, int], Counter] = {}
_timed: dict[str, Histogram] = {}


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    rule = request.url_rule
    route = rule.rule if rule is not None else "(unmatched)"
    status = response.status_code
    key = (request.method, route, status)
    counter = _counted.get(key)
    if counter is None:
        counter = _counted[key] = REQUESTS.labels(key[0], route, str(status))
    counter.inc()
    started = g.get("metrics_started")
    if started is not None:
        histogram = _timed.get(route)
        if histogram is None:
            histogram = _timed[route] = LATENCY.labels(route)
        histogram.observe(time.perf_counter() - started)
    return response


def init_app(
    app: Flask, settings: Settings, collectors: Iterable[Collector], *, check_token: TokenCheck
) -> None:
    """Count every request of ``app`` and serve ``/metrics`` from a registry of the HTTP
    counters and ``collectors``; ``check_token`` guards it when ``ECHO_METRICS_TOKEN`` is set
    (see the module docstring)."""
    registry = registry_of(collectors)
    token = settings.metrics_token
    production = settings.production
    bp = Blueprint("metrics", __name__)  # one per app: the view closes over its registry

    @bp.get("/metrics")
    def metrics() -> Response:
        if token is not None:
            refusal = check_token(token.get_secret_value(), REFUSAL_DESCRIPTION)
            if refusal is not None:
                return refusal
        elif production:
            abort(404)  # production without a token: not served (see the module docstring)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.before_request(_start_timer)
    app.after_request(_count_request)
    app.register_blueprint(bp)
