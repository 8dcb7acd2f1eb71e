"""Values read from the database kept for a second in this process: :class:`FreshFor`.

Hot paths (a client by id on every token request, a user's token state on every bearer
request) read settings that change rarely but must take effect soon everywhere: a disabled
client or a rotated secret within one second on every worker.

Cross-process invalidation is by expiry, not by messages: an entry is served for at most
``ttl`` seconds (default 1.0) of the clock's monotonic time counted from *before* it was read,
so every worker sees a change committed by any other process at most ``ttl`` seconds later,
without a channel between workers. The process that makes a change calls :meth:`FreshFor.forget`
and sees it at once. "Not found" is never kept: a guessed key costs a read every time but
cannot fill the map or hide a row created a moment later.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from echo_identity.clock import SYSTEM_CLOCK, Clock

V = TypeVar("V")

DEFAULT_TTL = 1.0
DEFAULT_SIZE = 4096


class FreshFor(Generic[V]):
    """A thread-safe map from string keys to values read at most ``ttl`` seconds ago, holding
    at most ``size`` entries (the oldest read is dropped first)."""

    def __init__(
        self, clock: Clock = SYSTEM_CLOCK, *, ttl: float = DEFAULT_TTL, size: int = DEFAULT_SIZE
    ) -> None:
        if ttl < 0 or size < 1:
            raise ValueError("ttl must be >= 0 and size >= 1")
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        # Bumped by forget/clear: a read that started before one is not stored (it may hold
        # the state the change replaced).
        self._generation = 0

    def get(self, key: str, load: Callable[[str], V | None]) -> V | None:
        """The value of ``key``: kept if read less than ``ttl`` seconds ago, else ``load(key)``
        (called without the lock held; two threads missing at once may both load). Returns
        ``None`` when ``load`` does, and keeps nothing then. Raises what ``load`` raises."""
        now = self._clock.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now < entry[0]:
                return entry[1]
            generation = self._generation
        value = load(key)
        if value is None:
            return None
        with self._lock:
            if generation == self._generation:
                self._entries.pop(key, None)
                self._entries[key] = (now + self.ttl, value)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return value

    def forget(self, key: str) -> None:
        """Drop ``key``: this process reads it afresh on its next :meth:`get`."""
        with self._lock:
            self._generation += 1
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
