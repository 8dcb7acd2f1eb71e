"""Group commit for audit events: concurrent requests share one transaction, and each still
returns only once its event is committed.

A request that changed nothing else (a client-credentials token, a ``/verify``, a vault
hand-out that needed no refresh) hands its event to the process's :class:`AuditWriter` and
waits. The writer's thread, on a connection of its own, takes every event queued so far,
inserts them with one ``executemany`` in one transaction, commits, and wakes every request
whose event it carried; while it commits, the next batch queues. So the trail keeps every
event a response was sent for (as durably as the database's own setting keeps a commit:
SQLite WAL with ``synchronous=NORMAL`` survives a killed process), and N concurrent requests
cost one ``BEGIN``/``COMMIT`` instead of N. A batch that fails wakes its requests with the
error, so each answers 500 rather than a response whose event is missing.

Events that must be atomic with a state change (a claimed code, a revocation, a consent) are
not written here: they join that change's transaction (:meth:`AuditTrail.record`).

On SQLite the database has one write lock, and writers of different processes that find it
taken sleep in SQLite's busy handler (1, 2, 5, 10 … ms), which is what made the token
endpoint's p99. The writers of all processes on one SQLite file therefore queue first on an
exclusive ``flock`` of ``<database>.audit-lock``: the kernel wakes the next writer as soon as
the lock is free. The lock is taken after the batch is built and released in a ``finally``
right after the commit or rollback; a killed process's lock is released by the kernel when its
descriptor closes. Nothing else waits for the ``flock`` while holding SQLite's lock, so the two
locks cannot deadlock.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.engine import Connection

from echo_identity.audit.models import AuditEvent
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.db import Database
from echo_identity.logs import get_logger

log = get_logger("echo_identity.audit")
INSERT = cast(Table, AuditEvent.__table__).insert()
MAX_BATCH = 512  # events per transaction; more wait for the next one
WAIT_SECONDS = 30.0  # a request gives up on a writer that stopped answering


class AuditWriteError(RuntimeError):
    """The batch carrying the event could not be committed (the event is not in the trail)."""


@dataclass
class _Pending:
    row: dict[str, Any]
    sub: str | None  # a person's sub whose pseudonym map row may be missing
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


_STOP = object()


class AuditWriter:
    """One per process and database: see the module docstring. The thread starts on the first
    :meth:`write` and stops on :meth:`close` (``Database.dispose`` calls it); a later write
    starts it again."""

    def __init__(self, database: Database, pseudonyms: Pseudonyms) -> None:
        self._database = database
        self._pseudonyms = pseudonyms
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._in_hand = 0  # events of the batch being committed (written by the thread only)
        url = database.engine.url
        self._lock_path = (
            f"{url.database}.audit-lock"
            if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
            else None
        )
        database.on_dispose(self.close)

    @property
    def lock_path(self) -> str | None:
        """The ``flock`` file writers of every process queue on (SQLite files only)."""
        return self._lock_path

    @property
    def running(self) -> bool:
        """Whether the writer's thread is alive (it starts on the first write)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def waiting(self) -> int:
        """Events whose requests are waiting: queued for the next batch or in the batch being
        committed (approximate while other threads add and take; may briefly count low while
        the writer moves a batch from the queue into its hands, never high)."""
        return self._queue.qsize() + self._in_hand

    def write(self, row: dict[str, Any], *, sub: str | None = None) -> None:
        """Insert the audit ``row`` (the columns of ``audit_events``) in the next batch and
        return once that batch is committed. ``sub``: the person whose pseudonym ``row``
        carries, so the writer adds its map row in the same transaction when this process has
        not seen it committed yet.

        Raises :class:`AuditWriteError` when the batch failed or the writer did not answer.
        """
        pending = _Pending(row, sub)
        self._ensure_running()
        self._queue.put(pending)
        if not pending.done.wait(WAIT_SECONDS):
            raise AuditWriteError("the audit writer did not commit in time")
        if pending.error is not None:
            raise AuditWriteError("the audit event could not be committed") from pending.error

    def close(self) -> None:
        """Commit what is queued, then stop the thread and close its connection."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _ensure_running(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="echo-audit-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        connection: Connection | None = None
        lock_fd = (
            os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600) if self._lock_path else None
        )
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    self._in_hand = len(batch)
                    if connection is None or connection.closed or connection.invalidated:
                        connection = self._database.engine.connect()
                    connection = self._commit(connection, lock_fd, batch)
                    self._in_hand = 0
                if stop:
                    return
        finally:
            if connection is not None:
                connection.close()
            if lock_fd is not None:
                os.close(lock_fd)

    def _next_batch(self) -> tuple[list[_Pending], bool]:
        """Block for the first event, then take whatever else is queued (up to MAX_BATCH)."""
        batch: list[_Pending] = []
        item = self._queue.get()
        while True:
            if item is _STOP:
                return batch, True
            batch.append(cast(_Pending, item))
            if len(batch) >= MAX_BATCH:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _commit(
        self, connection: Connection, lock_fd: int | None, batch: list[_Pending]
    ) -> Connection | None:
        """One transaction for ``batch``; wakes every request in it. Returns the connection to
        keep using (``None`` after a failure: the next batch opens a fresh one)."""
        try:
            with _flocked(lock_fd), connection.begin():
                mapped = self._map_pseudonyms(connection, batch)
                connection.execute(INSERT, [pending.row for pending in batch])
        except Exception as error:  # every waiter gets the error; the writer lives on
            log.error("audit batch failed", events=len(batch), error=type(error).__name__)
            for pending in batch:
                pending.error = error
                pending.done.set()
            connection.invalidate()
            connection.close()
            return None
        self._pseudonyms.remember(mapped)
        for pending in batch:
            pending.done.set()
        return connection

    def _map_pseudonyms(self, connection: Connection, batch: list[_Pending]) -> set[str]:
        subs = {pending.sub for pending in batch if pending.sub is not None}
        return self._pseudonyms.map_on(connection, subs) if subs else set()


@contextmanager
def _flocked(lock_fd: int | None) -> Iterator[None]:
    """Hold the cross-process writer lock (when there is one) for the block, released on
    every way out of it."""
    if lock_fd is None:
        yield
        return
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
