"""The audit trail's counters for ``/metrics`` (``web.metrics``): computed from the trail and
the alerts table at scrape time.

Sign-ins, token issuance, vault reads and denials are audit events, and alerts are rows of
``alerts``; one ``GROUP BY`` each turns them into counters. They are exact across any number
of workers and hosts, survive restarts, and cannot disagree with the audit trail or the
security report. (A counter only goes down when old events are purged, which Prometheus treats
as a counter reset.) The app registers :class:`AuditCounters` with ``web.metrics.init_app``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Table, func, select

from echo_identity.audit.alert_models import Alert, AlertDelivery
from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database

EVENTS = cast(Table, AuditEvent.__table__)
# Event-name prefixes → the counter family that reports them (the rest: audit_events_total).
FAMILIES = {
    "auth.": ("echo_login_events", "Sign-in events recorded in the audit trail."),
    "oauth.": ("echo_token_events", "OAuth/OIDC code and token events in the audit trail."),
    "vault.": ("echo_vault_events", "Token-vault reads, denials, refreshes and expiries."),
}


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
