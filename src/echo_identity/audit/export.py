"""``audit export``: stream audit events since a point in time as OCSF JSON lines."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import TextIO

from sqlalchemy import select

from echo_identity import __version__
from echo_identity.audit.detection import to_record
from echo_identity.audit.models import AuditEvent
from echo_identity.audit.ocsf import to_ocsf
from echo_identity.db import Database, utcnow

_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m`` … before ``now``, or an ISO 8601 time with a zone.

    Raises ``ValueError`` naming the accepted forms.
    """
    now = now or utcnow()
    match = _RELATIVE.match(value.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError("use a duration like 7d, 12h, 30m or an ISO 8601 time with a zone")
    return parsed


def export_ocsf(
    database: Database,
    since: datetime,
    out: TextIO,
    *,
    subject: str | None = None,
    client_id: str | None = None,
) -> int:
    """Write one OCSF JSON document per line for events at or after ``since``: only those
    about ``subject`` (a user's pseudonym) and of ``client_id``, when given. Returns how many
    were written."""
    written = 0
    query = select(AuditEvent).where(AuditEvent.occurred_at >= since)
    if subject is not None:
        query = query.where(AuditEvent.subject == subject)
    if client_id is not None:
        query = query.where(AuditEvent.client_id == client_id)
    with database.read_session() as session:
        rows = session.scalars(query.order_by(AuditEvent.id).execution_options(yield_per=1000))
        for row in rows:
            out.write(json.dumps(to_ocsf(to_record(row), __version__), sort_keys=True) + "\n")
            written += 1
    return written
