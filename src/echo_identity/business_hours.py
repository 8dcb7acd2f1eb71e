"""Business hours for the ``outside_business_hours`` rule: a daily time range on chosen
weekdays in one IANA time zone, parsed from the ``ECHO_BUSINESS_*`` settings.

Pure (standard library only) and below ``config``, which validates those settings with it;
the detection rules (``audit.rules``) read it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class BusinessHours:
    start: time
    end: time
    days: frozenset[int]
    zone: ZoneInfo

    @classmethod
    def parse(cls, hours: str, days: str, timezone: str) -> BusinessHours | None:
        """``None`` when ``hours`` is empty (rule disabled); raises ``ValueError`` when garbled.

        ``hours``: ``"08:00-18:00"``; ``days``: ``"mon-fri"`` or ``"mon,wed,sat"``;
        ``timezone``: an IANA name such as ``"Europe/Paris"``.
        """
        if not hours.strip():
            return None
        match = _HOURS.match(hours)
        if match is None:
            raise ValueError('write hours as "HH:MM-HH:MM", e.g. "08:00-18:00"')
        h1, m1, h2, m2 = (int(part) for part in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError("hours must lie between 00:00 and 24:00")
        end = time(23, 59, 59, 999_999) if h2 == 24 else time(h2, m2)
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r} (ECHO_BUSINESS_TIMEZONE)") from None
        return cls(time(h1, m1), end, _parse_days(days), zone)

    def contains(self, when: datetime) -> bool:
        local = when.astimezone(self.zone)
        if local.weekday() not in self.days:
            return False
        now = local.time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end  # a night shift crossing midnight


def _parse_days(days: str) -> frozenset[int]:
    chosen: set[int] = set()
    for part in (p.strip().lower() for p in days.split(",") if p.strip()):
        first, _, last = part.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"unknown day {part!r} in ECHO_BUSINESS_DAYS (use mon..sun)")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        chosen.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    if not chosen:
        raise ValueError("ECHO_BUSINESS_DAYS names no day")
    return frozenset(chosen)
