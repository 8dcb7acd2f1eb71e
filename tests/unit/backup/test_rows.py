"""The typed JSON-lines encoding: every value comes back exactly as it was read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Column, Integer, LargeBinary, MetaData, String, Table

from echo_identity.audit.models import AuditEvent
from echo_identity.backup import rows
from echo_identity.backup.errors import BackupCorruptError
from echo_identity.db import UTCDateTime

TABLE = Table(
    "sample",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String(20)),
    Column("blob", LargeBinary),
    Column("at", UTCDateTime),
    Column("data", JSON),
    Column("flag", Boolean),
)
KINDS = [kind for _, kind in rows.table_columns(TABLE)]


def round_trip(values: list[Any]) -> list[Any]:
    [line] = rows.lines_of([rows.row_line(KINDS, values)])
    return rows.decode_row(KINDS, json.loads(line))


def test_each_column_kind_comes_from_the_type_it_stores() -> None:
    assert KINDS == ["value", "value", "bytes", "datetime", "json", "value"]
    event_id = AuditEvent.__table__.c.id  # type: ignore[attr-defined]
    assert rows.column_kind(event_id) == "value"  # BigInteger with a SQLite variant


def test_values_round_trip_exactly() -> None:
    moment = datetime(2026, 12, 1, 23, 59, 59, 123456, tzinfo=UTC)
    values = [7, "zoë\n", bytes(range(256)), moment, {"a": [1, None, "x"], "b": {}}, True]

    assert round_trip(values) == values


def test_datetimes_are_written_in_utc_with_microseconds() -> None:
    east = timezone(timedelta(hours=2))
    moment = datetime(2026, 12, 2, 1, 0, 0, 5, tzinfo=east)
    line = rows.row_line(KINDS, [1, None, None, moment, None, None])

    assert b'"2026-12-01T23:00:00.000005+00:00"' in line
    assert round_trip([1, None, None, moment, None, None])[3] == moment


def test_null_stays_null_in_every_kind() -> None:
    assert round_trip([None] * 6) == [None] * 6


@pytest.mark.parametrize(
    "values",
    [[1, "a", "not base64!", None, None, None], [1, "a", None, "yesterday", None, None], [1]],
)
def test_a_value_that_does_not_fit_its_column_is_refused(values: list[Any]) -> None:
    with pytest.raises(BackupCorruptError):
        rows.decode_row(KINDS, values)


def test_parse_reads_tables_rows_and_ends() -> None:
    content = (
        rows.start_line(TABLE)
        + rows.row_line(KINDS, [1, "a", None, None, None, None])
        + rows.end_line("sample", 1)
    )

    items = list(rows.parse(rows.lines_of([content[:5], content[5:]])))

    assert items[0] == rows.TableStart("sample", rows.table_columns(TABLE))
    assert items[1] == [1, "a", None, None, None, None]
    assert items[2] == rows.TableEnd("sample", 1)


@pytest.mark.parametrize(
    "content",
    [b"[1]\n", b'{"table":"t","columns":[]}\n', b"not json\n", b'{"end":"t","rows":0}\n', b"[1"],
)
def test_malformed_content_is_refused(content: bytes) -> None:
    with pytest.raises(BackupCorruptError):
        list(rows.parse(rows.lines_of([content])))
