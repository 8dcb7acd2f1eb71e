"""The start of a report window, as users write it (``--since``, ``?since=``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """The start of a report window: a duration back from ``now`` (``30m``, ``24h``, ``7d``,
    ``2w``) or an ISO 8601 date/time (UTC when no offset is given).

    Raises:
        ValueError: ``text`` is neither, or lies after ``now``.
    """
    match = _DURATION.match(text)
    if match:
        since = now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"{text!r} is not a duration (30m, 24h, 7d, 2w) or an ISO 8601 date"
            ) from None
        since = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if since > now:
        raise ValueError(f"{text!r} lies in the future")
    return since.astimezone(UTC)
