"""The monitoring job of each worker pass: run the detection rules, then deliver alerts.

Its collaborators are built once at wiring (:meth:`Monitoring.from_settings`); the worker
calls :func:`monitoring_pass` with the database and the time of the pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from echo_identity.audit.delivery import Delivery, DeliveryResult, deliver_due
from echo_identity.audit.detection import DetectionPolicy, DetectionResult, run_detection
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.logs import get_logger

log = get_logger("echo_identity.audit.monitoring")


@dataclass(frozen=True)
class Monitoring:
    """What a monitoring pass evaluates with and delivers to."""

    detection: DetectionPolicy
    delivery: Delivery

    @classmethod
    def from_settings(cls, settings: Settings) -> Monitoring:
        """Raises ``ValueError`` for garbled business hours (``load_settings`` refuses them)."""
        return cls(DetectionPolicy.from_settings(settings), Delivery.from_settings(settings))


@dataclass(frozen=True)
class MonitoringResult:
    detection: DetectionResult | None  # None: detection failed (logged), retried next pass
    delivery: DeliveryResult | None  # None: delivery failed (logged), retried next pass


def monitoring_pass(database: Database, monitoring: Monitoring, now: datetime) -> MonitoringResult:
    """Detection then delivery at ``now``; a failure of one is logged and does not stop the
    other. Never raises (each step commits its own transactions)."""
    detection: DetectionResult | None = None
    delivery: DeliveryResult | None = None
    try:
        detection = run_detection(database, monitoring.detection, now)
    except Exception:  # the next pass retries from the same cursor
        log.exception("detection_pass_failed")
    try:
        delivery = deliver_due(database, monitoring.delivery, now)
    except Exception:  # undelivered rows stay due
        log.exception("alert_delivery_pass_failed")
    if (detection and detection.raised) or (delivery and (delivery.delivered or delivery.failed)):
        log.info(
            "monitoring_pass",
            alerts_raised=detection.raised if detection else 0,
            delivered=delivery.delivered if delivery else 0,
            delivery_failed=delivery.failed if delivery else 0,
        )
    return MonitoringResult(detection, delivery)
