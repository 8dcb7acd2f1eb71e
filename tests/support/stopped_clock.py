"""A clock whose monotonic reading stands still until the test moves it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class StoppedClock:
    """Wall time flows (rows written with the real time stay in order) plus whatever
    :meth:`advance` added; the monotonic reading moves *only* by :meth:`advance`, so "less than
    a second later" holds however slow the machine is (a :class:`MovableClock`'s monotonic
    reading keeps flowing: a test asserting what happens within a second would race it)."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._ahead = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._ahead)

    def monotonic(self) -> float:
        return self._start + self._ahead

    def advance(self, seconds: float) -> None:
        self._ahead += seconds
