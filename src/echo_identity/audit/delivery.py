"""Delivering alerts: at-least-once, with exponential back-off, never dropping an alert.

Each alert has one ``alert_deliveries`` row per channel. A pass claims due rows in a short
transaction by pushing their ``next_attempt_at`` past a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so concurrent workers take different rows), sends outside any transaction, then
records the outcome: ``delivered``, or ``failed`` with the reason and the next attempt at
``base * 2**(attempts-1)`` seconds, capped at ``ECHO_ALERT_RETRY_MAX``. A failed delivery is
retried for ever; a crash between send and record makes the row due again once the lease ends
(the receiver may then see the alert twice and can de-duplicate on ``alert_id``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from echo_identity.audit.alert_models import Alert, AlertDelivery
from echo_identity.audit.alerts import alert_payload
from echo_identity.audit.sinks import AlertSink, DeliveryError, sinks_from_settings
from echo_identity.config import Settings
from echo_identity.db import Database, utcnow
from echo_identity.logs import get_logger

log = get_logger("echo_identity.audit.delivery")
BATCH = 50


@dataclass(frozen=True)
class DeliveryResult:
    delivered: int
    failed: int


@dataclass(frozen=True)
class Delivery:
    """Where alerts go and how failures are retried: the ``ECHO_ALERT_*`` settings as objects,
    built once (:meth:`from_settings`) at wiring. No sink: nothing is delivered."""

    sinks: Mapping[str, AlertSink]
    issuer: str  # links in the payload point at this instance
    lease: timedelta  # how long a claimed delivery stays out of other workers' reach
    retry_base: int
    retry_max: int

    @classmethod
    def from_settings(
        cls, settings: Settings, sinks: Mapping[str, AlertSink] | None = None
    ) -> Delivery:
        """The delivery of ``settings``, to ``sinks`` when given (tests), else to the sinks
        the settings configure."""
        return cls(
            sinks=sinks if sinks is not None else sinks_from_settings(settings),
            issuer=settings.issuer,
            lease=timedelta(seconds=settings.alert_delivery_timeout * 2 + 60),
            retry_base=settings.alert_retry_base,
            retry_max=settings.alert_retry_max,
        )


@dataclass(frozen=True)
class _Claimed:
    delivery_id: int
    channel: str
    attempts: int
    payload: dict[str, Any]


def backoff(attempts: int, base: int, cap: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt (1, 2, ...)."""
    return timedelta(seconds=min(cap, base * 2 ** min(max(attempts - 1, 0), 30)))


def _claim(
    database: Database, channels: list[str], now: datetime, lease: timedelta, issuer: str
) -> list[_Claimed]:
    with database.transaction() as session:
        statement = (
            select(AlertDelivery, Alert)
            .join(Alert, Alert.id == AlertDelivery.alert_id)
            .where(
                AlertDelivery.status != "delivered",
                AlertDelivery.next_attempt_at <= now,
                AlertDelivery.channel.in_(channels),
            )
            .order_by(AlertDelivery.next_attempt_at, AlertDelivery.id)
            .limit(BATCH)
        )
        if database.dialect == "postgresql":
            statement = statement.with_for_update(skip_locked=True, of=AlertDelivery)
        claimed = []
        for delivery, alert in session.execute(statement):
            delivery.next_attempt_at = now + lease
            claimed.append(
                _Claimed(
                    delivery.id,
                    delivery.channel,
                    delivery.attempts,
                    {**alert_payload(alert, issuer), "channel": delivery.channel},
                )
            )
    return claimed


def deliver_due(
    database: Database, delivery: Delivery, now: datetime | None = None
) -> DeliveryResult:
    """Send every due delivery once; returns how many succeeded and failed. A sink's failure
    is recorded on its row, never raised; database errors are raised."""
    sinks = delivery.sinks
    if not sinks:
        return DeliveryResult(0, 0)
    now = now or utcnow()
    claimed = _claim(database, sorted(sinks), now, delivery.lease, delivery.issuer)
    delivered = failed = 0
    for item in claimed:
        error: str | None = None
        try:
            sinks[item.channel].send(item.payload)
        except DeliveryError as exc:
            error = str(exc)[:300]
        except Exception as exc:  # a broken channel must not lose the alert or stop the pass
            log.exception("alert_delivery_crashed", delivery_id=item.delivery_id)
            error = f"unexpected {type(exc).__name__}"
        finished = max(now, utcnow())
        with database.transaction() as session:
            row = session.get(AlertDelivery, item.delivery_id)
            if row is None:
                continue
            row.attempts = item.attempts + 1
            if error is None:
                row.status = "delivered"
                row.delivered_at = finished
                row.last_error = None
                delivered += 1
            else:
                row.status = "failed"
                row.last_error = error
                row.next_attempt_at = finished + backoff(
                    row.attempts, delivery.retry_base, delivery.retry_max
                )
                failed += 1
                log.warning(
                    "alert_delivery_failed",
                    delivery_id=row.id,
                    channel=row.channel,
                    attempts=row.attempts,
                    reason=error,
                )
    return DeliveryResult(delivered, failed)
