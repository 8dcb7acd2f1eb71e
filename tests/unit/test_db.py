"""``Database``'s per-thread read connections: reused within a thread, closed when the thread
ends or the database is disposed, so threads that come and go never pile up connections."""

from __future__ import annotations

import gc
import threading

from sqlalchemy import event, text

from echo_identity.db import Database

SELECT_ONE = text("SELECT 1 AS one")


def opened_and_closed(database: Database) -> tuple[list[int], list[int]]:
    opened: list[int] = []
    closed: list[int] = []
    engine = database._read_engine
    event.listen(engine, "connect", lambda *_args: opened.append(1))
    event.listen(engine.pool, "close", lambda *_args: closed.append(1))
    return opened, closed


def test_a_thread_reuses_its_read_connection(database: Database) -> None:
    opened, _closed = opened_and_closed(database)
    for _ in range(5):
        assert database.read_row(SELECT_ONE, {}) == {"one": 1}
    assert len(opened) == 1


def test_a_threads_read_connection_is_closed_when_the_thread_ends(database: Database) -> None:
    opened, closed = opened_and_closed(database)

    def read_once() -> None:
        assert database.read_rows(SELECT_ONE, {})[0]["one"] == 1

    for _ in range(20):  # a server's thread per request, or idle threads retired
        thread = threading.Thread(target=read_once)
        thread.start()
        thread.join()
    gc.collect()
    assert len(opened) == 20
    assert len(closed) == 20  # none left open behind a finished thread


def test_after_dispose_each_thread_closes_its_own_read_connection(database: Database) -> None:
    opened, closed = opened_and_closed(database)
    started, release = threading.Event(), threading.Event()

    def read_and_wait() -> None:
        database.read_row(SELECT_ONE, {})
        started.set()
        release.wait(30)

    thread = threading.Thread(target=read_and_wait)
    thread.start()
    assert started.wait(30)
    database.read_row(SELECT_ONE, {})
    database.dispose()
    assert len(opened) == 2
    assert len(closed) == 1  # ours; never one another thread may be using
    release.set()
    thread.join()
    gc.collect()
    assert len(closed) == 2  # the other thread's, when it ended
    assert database.read_row(SELECT_ONE, {}) == {"one": 1}  # usable again after dispose
    assert len(opened) == 3


def test_a_thread_replaces_its_read_connection_on_its_next_read_after_dispose(
    database: Database,
) -> None:
    opened, closed = opened_and_closed(database)
    database.read_row(SELECT_ONE, {})
    first = database._reader()
    database._generation += 1  # what dispose() does for the other threads
    assert database.read_row(SELECT_ONE, {}) == {"one": 1}
    assert first.closed
    assert (len(opened), len(closed)) == (2, 1)
