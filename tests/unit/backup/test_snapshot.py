"""The snapshot a backup reads: SQLite through its online backup API (the write-ahead log
included), PostgreSQL in one repeatable-read, read-only transaction."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Table, text

from echo_identity import migrations
from echo_identity.accounts.models import User
from echo_identity.backup.errors import BackupError
from echo_identity.backup.snapshot import open_snapshot
from echo_identity.db import Database
from tests.factories import create_user

USERS = User.__table__
assert isinstance(USERS, Table)


def test_a_sqlite_snapshot_holds_the_commits_still_in_the_write_ahead_log(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    database = Database(f"sqlite:///{path}")
    migrations.upgrade(database)
    database.dispose()  # the last connection to close folds the WAL into the file
    reader = database.engine.connect()  # an open connection keeps the WAL from being folded in
    try:
        user = create_user(database)
        assert Path(f"{path}-wal").stat().st_size > 0
        shutil.copy(path, tmp_path / "plain-copy.db")
        plain = sqlite3.connect(tmp_path / "plain-copy.db")
        try:
            assert plain.execute("SELECT count(*) FROM users").fetchone() == (0,)
        finally:
            plain.close()

        with open_snapshot(database) as snapshot:
            assert snapshot.count(USERS) == 1
            assert [row.username for row in snapshot.rows(USERS)] == [user.username]  # type: ignore[attr-defined]
            assert snapshot.revision == migrations.head_revision(database)
    finally:
        reader.close()
        database.dispose()


def test_a_database_without_schema_is_refused(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()
    database = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(BackupError, match="db upgrade"), open_snapshot(database):
            pass
    finally:
        database.dispose()


def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    database = Database(f"sqlite:///{missing}")
    try:
        with pytest.raises(BackupError, match="cannot be opened"), open_snapshot(database):
            pass
    finally:
        database.dispose()
    assert not missing.exists()


@pytest.mark.postgres
def test_a_postgresql_snapshot_is_one_repeatable_read_read_only_transaction(
    database: Database,
) -> None:
    assert database.dialect == "postgresql", "set ECHO_TEST_DATABASE_URL (make test-postgres)"
    create_user(database)
    with open_snapshot(database) as snapshot:
        isolation = snapshot.connection.scalar(text("SHOW transaction_isolation"))
        read_only = snapshot.connection.scalar(text("SHOW transaction_read_only"))
        before = snapshot.count(USERS)
        create_user(database)  # committed by another transaction meanwhile
        assert snapshot.count(USERS) == before
    assert (isolation, read_only) == ("repeatable read", "on")
