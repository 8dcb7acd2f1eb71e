"""What key management contributes to the security report (``echo_identity.reports``): the
age of the data keys that still encrypt, per KEK, measured against the rotation policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from echo_identity.keys.models import DataKey


@dataclass(frozen=True)
class DataKeyAge:
    kek_id: str
    current_keys: int  # data keys that still encrypt (not retired)
    oldest_age_days: int
    over_policy: int  # current keys older than the policy


def data_key_ages(session: Session, now: datetime, max_age_days: int) -> list[DataKeyAge]:
    """Per KEK (ordered by id): how many data keys still encrypt, the oldest one's age, and
    how many are older than ``max_age_days``. Nothing is decrypted."""
    cutoff = now - timedelta(days=max_age_days)
    rows = session.execute(
        select(
            DataKey.kek_id,
            func.count(),
            func.min(DataKey.created_at),
            func.sum(case((DataKey.created_at < cutoff, 1), else_=0)),
        )
        .where(DataKey.retired_at.is_(None))
        .group_by(DataKey.kek_id)
        .order_by(DataKey.kek_id)
    )
    return [
        DataKeyAge(str(kek_id), int(count), _oldest_days(oldest, now), int(over or 0))
        for kek_id, count, oldest, over in rows
    ]


def _oldest_days(oldest: datetime | str | None, now: datetime) -> int:
    # MIN() over a TypeDecorator column loses the type on SQLite: parse the stored text.
    if oldest is None:
        return 0
    if isinstance(oldest, str):
        oldest = datetime.fromisoformat(oldest)
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max(0, (now - oldest).days)
