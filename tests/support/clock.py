"""A clock that tests move forward instead of sleeping (``services.build_services(clock=...)``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class MovableClock:
    """The machine's time plus whatever :meth:`advance` added: time still flows (rows written
    by other code with the real time stay in order), and a test jumps ahead without waiting."""

    def __init__(self) -> None:
        self._ahead = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._ahead)

    def monotonic(self) -> float:
        return time.monotonic() + self._ahead

    def advance(self, seconds: float) -> None:
        self._ahead += seconds
