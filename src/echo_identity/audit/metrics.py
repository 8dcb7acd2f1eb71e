"""``/metrics`` in the Prometheus text format: request, sign-in, token, vault and alert counters.

Two sources, chosen so every granian worker process reports the same numbers:

- **Domain counters come from the database at scrape time.** Sign-ins, token issuance, vault
  reads and denials are audit events, and alerts are rows of ``alerts``; one ``GROUP BY`` each
  turns them into counters. They are exact across any number of workers and hosts, survive
  restarts, and cannot disagree with the audit trail or the security report. (A counter only
  goes down when old events are purged, which Prometheus treats as a counter reset.)
- **HTTP request counters live in the process** (prometheus-client). With several workers,
  prometheus-client's multiprocess mode sums every worker's values at scrape time from files in
  ``PROMETHEUS_MULTIPROC_DIR``, which ``echo-identity serve`` provides (``cli/serve.py``
  ``_metrics_directory``). prometheus-client reads that variable when it is imported, before
  settings exist, which is why it is not an ``ECHO_*`` setting.

Access: Keycloak and Ory Hydra serve metrics on a separate management/admin listener without
authentication. Echo Identity has one listener, so ``/metrics`` needs ``ECHO_METRICS_TOKEN``
as a Bearer token when that is set; without it ``/metrics`` is open in development and not
served (404) in production.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterator
from typing import cast

from flask import Blueprint, Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Table, func, select

from echo_identity.audit.alert_models import Alert, AlertDelivery
from echo_identity.audit.models import AuditEvent
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.idp.bearer import bearer_error_response, bearer_token
from echo_identity.idp.errors import InvalidBearerTokenError

bp = Blueprint("metrics", __name__)
EVENTS = cast(Table, AuditEvent.__table__)
# Event-name prefixes → the counter family that reports them (the rest: audit_events_total).
FAMILIES = {
    "auth.": ("echo_login_events", "Sign-in events recorded in the audit trail."),
    "oauth.": ("echo_token_events", "OAuth/OIDC code and token events in the audit trail."),
    "vault.": ("echo_vault_events", "Token-vault reads, denials, refreshes and expiries."),
}

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


class AuditCounters(Collector):
    """Counters computed from the audit trail and the alerts table at each scrape."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def collect(self) -> Iterator[Metric]:
        with self._database.read_session() as session:
            events = list(
                session.execute(
                    select(EVENTS.c.event_type, EVENTS.c.outcome, func.count()).group_by(
                        EVENTS.c.event_type, EVENTS.c.outcome
                    )
                )
            )
            alerts = list(
                session.execute(
                    select(Alert.rule, Alert.severity, func.count()).group_by(
                        Alert.rule, Alert.severity
                    )
                )
            )
            deliveries = list(
                session.execute(
                    select(AlertDelivery.channel, AlertDelivery.status, func.count()).group_by(
                        AlertDelivery.channel, AlertDelivery.status
                    )
                )
            )
        families = {
            prefix: CounterMetricFamily(name, text, labels=["event", "outcome"])
            for prefix, (name, text) in FAMILIES.items()
        }
        everything = CounterMetricFamily(
            "echo_audit_events", "Every audit event recorded.", labels=["event", "outcome"]
        )
        for event_type, outcome, count in events:
            everything.add_metric([event_type, outcome], count)
            for prefix, family in families.items():
                if str(event_type).startswith(prefix):
                    family.add_metric([event_type, outcome], count)
        yield from families.values()
        yield everything
        raised = CounterMetricFamily(
            "echo_alerts", "Alerts raised by the detection rules.", labels=["rule", "severity"]
        )
        for rule, severity, count in alerts:
            raised.add_metric([rule, severity], count)
        yield raised
        pending = GaugeMetricFamily(
            "echo_alert_deliveries",
            "Alert deliveries by channel and state (pending, failed, delivered).",
            labels=["channel", "status"],
        )
        for channel, status, count in deliveries:
            pending.add_metric([channel, status], count)
        yield pending


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _registry(database: Database) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if _multiprocess():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
    registry.register(AuditCounters(database))
    return registry


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
    REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    started = g.get("metrics_started")
    if started is not None:
        LATENCY.labels(route).observe(time.perf_counter() - started)
    return response


@bp.get("/metrics")
def metrics() -> Response:
    settings: Settings = current_app.extensions["echo.settings"]
    if settings.metrics_token is not None:
        expected = settings.metrics_token.get_secret_value().encode()
        offered = (bearer_token() or "").encode()
        if not hmac.compare_digest(offered, expected):
            return bearer_error_response(
                InvalidBearerTokenError("Send ECHO_METRICS_TOKEN as a Bearer token.")
            )
    elif settings.production:
        abort(404)  # production without a token: not served (see the module docstring)
    registry: CollectorRegistry = current_app.extensions["echo.metrics_registry"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask, database: Database) -> None:
    app.extensions["echo.metrics_registry"] = _registry(database)
    app.before_request(_start_timer)
    app.after_request(_count_request)
    app.register_blueprint(bp)
