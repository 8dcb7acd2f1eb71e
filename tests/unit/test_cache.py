"""FreshFor keeps a read value for ``ttl`` seconds of the clock, never keeps "not found", stays
within its size, and forgets on demand."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from echo_identity.cache import FreshFor
from tests.support.clock import MovableClock
from tests.support.stopped_clock import StoppedClock


class Source:
    """A backing store that counts its reads."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.reads: Counter[str] = Counter()

    def load(self, key: str) -> str | None:
        self.reads[key] += 1
        return self.values.get(key)


def test_a_value_is_served_from_memory_until_ttl_seconds_pass_then_read_again() -> None:
    clock = StoppedClock()
    source = Source({"a": "old"})
    cache: FreshFor[str] = FreshFor(clock, ttl=1.0)
    assert cache.get("a", source.load) == "old"
    source.values["a"] = "new"  # changed by another process
    clock.advance(0.999)
    assert cache.get("a", source.load) == "old"
    assert source.reads["a"] == 1
    clock.advance(0.001)
    assert cache.get("a", source.load) == "new"
    assert source.reads["a"] == 2


def test_expiry_also_holds_on_a_clock_whose_time_flows() -> None:
    clock = MovableClock()
    source = Source({"a": "old"})
    cache: FreshFor[str] = FreshFor(clock)
    cache.get("a", source.load)
    source.values["a"] = "new"
    clock.advance(1.0)
    assert cache.get("a", source.load) == "new"


def test_the_ttl_counts_from_before_the_read() -> None:
    """A slow read cannot stretch how stale a value may be: it expires ``ttl`` after the read
    began."""
    clock = StoppedClock()
    cache: FreshFor[str] = FreshFor(clock, ttl=1.0)
    reads = 0

    def slow_load(key: str) -> str:
        nonlocal reads
        reads += 1
        clock.advance(0.6)  # the read itself takes 0.6 s
        return "v"

    cache.get("a", slow_load)
    clock.advance(0.4)  # 1.0 s after the read began, 0.4 s after it ended
    cache.get("a", slow_load)
    assert reads == 2


def test_not_found_is_never_kept() -> None:
    clock = StoppedClock()
    source = Source({})
    cache: FreshFor[str] = FreshFor(clock)
    for guess in ("x", "y", "x"):
        assert cache.get(guess, source.load) is None
    assert len(cache) == 0
    source.values["x"] = "created meanwhile"
    assert cache.get("x", source.load) == "created meanwhile"
    assert source.reads["x"] == 3


def test_size_is_bounded_and_the_oldest_read_goes_first() -> None:
    clock = StoppedClock()
    source = Source({str(i): f"v{i}" for i in range(10)})
    cache: FreshFor[str] = FreshFor(clock, size=3)
    for i in range(10):
        cache.get(str(i), source.load)
    assert len(cache) == 3
    for i in (7, 8, 9):
        cache.get(str(i), source.load)
    assert all(source.reads[str(i)] == 1 for i in (7, 8, 9))
    cache.get("0", source.load)
    assert source.reads["0"] == 2  # evicted, read again
    assert len(cache) == 3


def test_forget_and_clear_make_this_process_read_again_at_once() -> None:
    clock = StoppedClock()
    source = Source({"a": "1", "b": "1"})
    cache: FreshFor[str] = FreshFor(clock)
    cache.get("a", source.load)
    cache.get("b", source.load)
    source.values.update(a="2", b="2")
    cache.forget("a")
    assert cache.get("a", source.load) == "2"
    assert cache.get("b", source.load) == "1"
    cache.clear()
    assert cache.get("b", source.load) == "2"


def test_a_read_that_started_before_a_forget_is_not_kept() -> None:
    """The change's own process forgets the key while another thread is reading the old state:
    that old state must not be stored over the forget."""
    clock = StoppedClock()
    cache: FreshFor[str] = FreshFor(clock)
    values = {"a": "old"}

    def load_racing_a_change(key: str) -> str:
        value = values[key]
        values[key] = "new"  # the change commits and its process forgets, mid-read
        cache.forget(key)
        return value

    assert cache.get("a", load_racing_a_change) == "old"
    assert cache.get("a", lambda key: values[key]) == "new"


def test_a_failing_read_propagates_and_keeps_nothing() -> None:
    cache: FreshFor[str] = FreshFor(StoppedClock())

    def broken(key: str) -> str:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        cache.get("a", broken)
    assert len(cache) == 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="ttl"):
        FreshFor(StoppedClock(), ttl=-1)
    with pytest.raises(ValueError, match="size"):
        FreshFor(StoppedClock(), size=0)


def test_many_threads_share_one_cache_without_losing_its_bound_or_values() -> None:
    clock = StoppedClock()
    cache: FreshFor[str] = FreshFor(clock, size=50)
    errors: list[str] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for i in range(2000):
            key = str((i * 7 + n) % 120)
            value = cache.get(key, lambda k: f"value-{k}")
            if value != f"value-{key}":
                errors.append(f"{key} -> {value}")
            if i % 97 == 0:
                cache.forget(key)
            if i % 500 == 0:
                clock.advance(0.5)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 50
