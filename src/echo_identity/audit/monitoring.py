"""The monitoring step of each worker pass: run the detection rules, then deliver alerts."""

from __future__ import annotations

from dataclasses import dataclass

from echo_identity.audit.delivery import DeliveryResult, deliver_due
from echo_identity.audit.detection import DetectionResult, run_detection
from echo_identity.config import Settings
from echo_identity.db import Database
from echo_identity.logs import get_logger

log = get_logger("echo_identity.audit.monitoring")


@dataclass(frozen=True)
class MonitoringResult:
    detection: DetectionResult | None
    delivery: DeliveryResult | None


def monitoring_pass(database: Database, settings: Settings) -> MonitoringResult:
    """Detection then delivery; a failure of one is logged and does not stop the other."""
    detection: DetectionResult | None = None
    delivery: DeliveryResult | None = None
    try:
        detection = run_detection(database, settings)
    except Exception:  # the next pass retries from the same cursor
        log.exception("detection_pass_failed")
    try:
        delivery = deliver_due(database, settings)
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
