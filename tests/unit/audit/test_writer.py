"""The group-commit writer: every event a caller waited for is committed, concurrent events
share a transaction, a failed batch fails exactly its callers, and the cross-process writer
lock is released on every way out (a failure, a stop, a killed process)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from echo_identity import migrations
from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent, AuditPseudonym
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.audit.service import AuditTrail
from echo_identity.audit.service import _row as build_row
from echo_identity.audit.writer import AuditWriteError, AuditWriter
from echo_identity.db import Database
from tests.factories import create_user

PSEUDONYMS = Pseudonyms.from_secret(b"w" * 32)


@pytest.fixture
def trail(database: Database) -> Iterator[AuditTrail]:
    trail = AuditTrail(PSEUDONYMS, AuditWriter(database, PSEUDONYMS))
    yield trail
    assert trail.writer is not None
    trail.writer.close()


def count(database: Database, **where: Any) -> int:
    with database.read_session() as session:
        statement = select(func.count()).select_from(AuditEvent)
        for column, value in where.items():
            statement = statement.where(getattr(AuditEvent, column) == value)
        return int(session.scalar(statement) or 0)


def commits_of(database: Database) -> list[int]:
    """A list that grows by one for every COMMIT on the database's engine."""
    seen: list[int] = []
    event.listen(database.engine, "commit", lambda _connection: seen.append(1))
    return seen


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite file, whatever ECHO_TEST_DATABASE_URL says: the cross-process writer
    lock exists for SQLite files only (PostgreSQL row inserts do not serialise)."""
    database = Database(f"sqlite:///{tmp_path / 'writer.db'}")
    migrations.upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_trail(sqlite_database: Database) -> Iterator[AuditTrail]:
    trail = AuditTrail(PSEUDONYMS, AuditWriter(sqlite_database, PSEUDONYMS))
    yield trail
    assert trail.writer is not None
    trail.writer.close()


@contextmanager
def writer_lock_held(writer: AuditWriter) -> Iterator[None]:
    """Hold the writers' flock from outside (as another process's writer would)."""
    assert writer.lock_path is not None
    fd = os.open(writer.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def lock_is_free(writer: AuditWriter) -> bool:
    assert writer.lock_path is not None
    fd = os.open(writer.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def write_from_threads(trail: AuditTrail, n: int, **fields: Any) -> list[BaseException | None]:
    results: list[BaseException | None] = [None] * n

    def one(i: int) -> None:
        try:
            trail.write(EventType.TOKEN_VERIFIED, client_id=f"c{i}", **fields)
        except BaseException as error:  # recorded for the assertion
            results[i] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_write_returns_after_the_event_is_committed(database: Database, trail: AuditTrail) -> None:
    trail.write(EventType.TOKEN_VERIFIED, client_id="svc", token="a.b.c")
    # another connection sees it at once: it was committed before write() returned
    assert count(database, client_id="svc") == 1


def test_write_does_not_return_while_its_batch_cannot_commit(
    sqlite_database: Database, sqlite_trail: AuditTrail
) -> None:
    database, trail = sqlite_database, sqlite_trail
    assert trail.writer is not None
    caller = threading.Thread(target=trail.write, args=(EventType.TOKEN_VERIFIED,))
    with writer_lock_held(trail.writer):  # another process's writer is committing
        caller.start()
        caller.join(0.5)
        assert caller.is_alive()  # still waiting: nothing is committed yet
        assert count(database) == 0
    caller.join(30)
    assert not caller.is_alive()
    assert count(database) == 1


def test_concurrent_events_share_one_transaction(
    sqlite_database: Database, sqlite_trail: AuditTrail
) -> None:
    database, trail = sqlite_database, sqlite_trail
    assert trail.writer is not None
    trail.write(EventType.TOKEN_VERIFIED, client_id="warm-up")  # thread and connection up
    commits = commits_of(database)
    results: list[BaseException | None] = []
    with writer_lock_held(trail.writer):
        # The writer takes what is queued when it wakes (the first event, or a few) and waits
        # for the lock with them; the rest queue behind it.
        runner = threading.Thread(target=lambda: results.extend(write_from_threads(trail, 20)))
        runner.start()
        for _ in range(600):
            if trail.writer.waiting() >= 20:
                break
            runner.join(0.05)
        assert trail.writer.waiting() == 20
        assert count(database) == 1  # nothing more can commit while the lock is held
    runner.join(30)
    assert results == [None] * 20
    assert count(database) == 21
    # the batch that waited for the lock, then everything queued behind it together
    assert 1 <= len(commits) <= 2


def test_a_failed_batch_fails_its_callers_releases_the_lock_and_the_writer_goes_on(
    database: Database, trail: AuditTrail
) -> None:
    assert trail.writer is not None
    with pytest.raises(AuditWriteError):
        # event_type is NOT NULL: the batch's INSERT fails inside the transaction
        trail.writer.write({**_row(), "event_type": None})
    if trail.writer.lock_path is not None:
        assert lock_is_free(trail.writer)
    assert count(database) == 0  # nothing half-written
    trail.write(EventType.TOKEN_VERIFIED, client_id="after")
    assert count(database, client_id="after") == 1


def test_close_commits_what_is_queued_and_a_later_write_starts_again(
    database: Database, trail: AuditTrail
) -> None:
    assert trail.writer is not None
    results = write_from_threads(trail, 5)
    trail.writer.close()
    assert results == [None] * 5
    if trail.writer.lock_path is not None:
        assert lock_is_free(trail.writer)
    trail.write(EventType.TOKEN_VERIFIED, client_id="restarted")
    assert count(database) == 6


def test_disposing_the_database_stops_the_writer(database: Database, trail: AuditTrail) -> None:
    assert trail.writer is not None
    trail.write(EventType.TOKEN_VERIFIED)
    assert trail.writer.running
    database.dispose()
    assert not trail.writer.running


def test_a_users_pseudonym_is_mapped_in_the_batch_and_random_subs_map_nothing(
    database: Database, trail: AuditTrail
) -> None:
    sub = create_user(database).sub
    trail.write(EventType.TOKEN_VERIFIED, user=sub)
    trail.write(EventType.TOKEN_VERIFIED, user="no-such-user")
    with database.read_session() as session:
        rows = {row.pseudonym: row.user_sub for row in session.scalars(select(AuditPseudonym))}
    assert rows == {PSEUDONYMS.of(sub): sub}
    assert count(database, subject=PSEUDONYMS.of(sub)) == 1


def test_a_killed_writer_process_leaves_neither_lock_held(sqlite_database: Database) -> None:
    """A process killed inside its batch (writer lock and SQLite's write lock both held): the
    kernel releases both, and this process's writer commits at once."""
    database = sqlite_database
    url = database.engine.url.render_as_string(hide_password=False)
    holder = textwrap.dedent(
        f"""
        import sys, time
        from echo_identity.audit.pseudonyms import Pseudonyms
        from echo_identity.audit.writer import AuditWriter, _flocked
        import os
        from echo_identity.db import Database
        database = Database({url!r})
        writer = AuditWriter(database, Pseudonyms(b"k" * 32))
        fd = os.open(writer.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        with _flocked(fd), database.engine.connect() as connection, connection.begin():
            connection.exec_driver_sql("INSERT INTO audit_events (occurred_at, event_type, "
                "outcome, severity, details) VALUES ('2026-01-01', 'x', 'success', 'info', '{{}}')")
            print("holding", flush=True)
            time.sleep(600)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "holding"
            writer = AuditWriter(database, PSEUDONYMS)
            assert not lock_is_free(writer)
            process.kill()  # SIGKILL: no finally, no atexit
            process.wait(30)
            assert lock_is_free(writer)
            AuditTrail(PSEUDONYMS, writer).write(EventType.TOKEN_VERIFIED, client_id="next")
            writer.close()
        finally:
            process.kill()
    assert count(database, client_id="next") == 1
    assert count(database, event_type="x") == 0  # the killed batch was rolled back


def _row() -> dict[str, Any]:
    return build_row(EventType.TOKEN_VERIFIED, {}, None)
