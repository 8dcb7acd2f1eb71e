"""The content of a backup: typed JSON lines, one table after another.

::

    {"table": "users", "columns": [["id", "value"], ["created_at", "datetime"], …]}
    [1, "2026-12-01T10:00:00.000000+00:00", …]            one JSON array per row
    {"end": "users", "rows": 1}

Each column has a kind, so every value comes back exactly as it was read: ``bytes`` as
base64, ``datetime`` as ISO 8601 in UTC with microseconds, ``json`` and ``value`` (integers,
strings, booleans, floats) as JSON. ``None`` is SQL NULL in every kind.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, Column, Date, DateTime, LargeBinary, Table
from sqlalchemy.types import TypeDecorator, TypeEngine

from echo_identity.backup.errors import BackupCorruptError

KINDS = ("bytes", "datetime", "date", "json", "value")


@dataclass(frozen=True)
class TableStart:
    """A table begins: its name and its columns' names and kinds, in row order."""

    table: str
    columns: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TableEnd:
    """A table ends after ``rows`` rows."""

    table: str
    rows: int


def column_kind(column: Column[Any]) -> str:
    """How values of ``column`` are written: by the type it stores (a ``TypeDecorator`` by
    the type it decorates)."""
    stored: TypeEngine[Any] = column.type
    if isinstance(stored, TypeDecorator):
        stored = stored.impl_instance
    if isinstance(stored, LargeBinary):
        return "bytes"
    if isinstance(stored, DateTime):
        return "datetime"
    if isinstance(stored, Date):
        return "date"
    if isinstance(stored, JSON):
        return "json"
    return "value"


def table_columns(table: Table) -> tuple[tuple[str, str], ...]:
    return tuple((column.name, column_kind(column)) for column in table.columns)


def start_line(table: Table) -> bytes:
    return _line({"table": table.name, "columns": [list(pair) for pair in table_columns(table)]})


def end_line(table: str, rows: int) -> bytes:
    return _line({"end": table, "rows": rows})


def row_line(kinds: Sequence[str], values: Sequence[Any]) -> bytes:
    return _line([_encode(kind, value) for kind, value in zip(kinds, values, strict=True)])


def decode_row(kinds: Sequence[str], values: Sequence[Any]) -> list[Any]:
    """The Python values of one row line.

    Raises:
        BackupCorruptError: the row has the wrong number of values, or a value does not fit
            its column's kind.
    """
    if len(values) != len(kinds):
        raise BackupCorruptError("a row has the wrong number of values")
    try:
        return [_decode(kind, value) for kind, value in zip(kinds, values, strict=True)]
    except (TypeError, ValueError):
        raise BackupCorruptError("a row holds a value that does not fit its column") from None


def parse(lines: Iterable[bytes]) -> Iterator[TableStart | TableEnd | list[Any]]:
    """Each line's meaning: a :class:`TableStart`, a row (its raw JSON values) or a
    :class:`TableEnd`.

    Raises:
        BackupCorruptError: a line is not JSON, a row comes outside a table, or a table
            marker is malformed.
    """
    current: str | None = None
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            raise BackupCorruptError("the content holds a line that is not JSON") from None
        if isinstance(item, list):
            if current is None:
                raise BackupCorruptError("the content holds a row outside a table")
            yield item
        elif isinstance(item, dict) and isinstance(item.get("table"), str) and current is None:
            current = item["table"]
            yield TableStart(current, _columns(item.get("columns")))
        elif isinstance(item, dict) and item.get("end") == current and current is not None:
            yield TableEnd(current, int(item.get("rows", -1)))
            current = None
        else:
            raise BackupCorruptError("the content holds a malformed table marker")
    if current is not None:
        raise BackupCorruptError(f"the content ends inside table {current}")


def lines_of(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The newline-terminated lines of a stream handed over in pieces of any size."""
    pending = b""
    for piece in pieces:
        pending += piece
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        raise BackupCorruptError("the content ends in the middle of a line")


def _columns(raw: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and pair[1] in KINDS
        for pair in raw
    ):
        raise BackupCorruptError("a table marker lists malformed columns")
    return tuple((pair[0], pair[1]) for pair in raw)


def _line(item: object) -> bytes:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _encode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind == "datetime":
        moment: datetime = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="microseconds")
    if kind == "date":
        return value.isoformat()
    return value


def _decode(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "bytes":
        return base64.b64decode(value, validate=True)
    if kind == "datetime":
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("a datetime without its UTC offset")
        return moment.astimezone(UTC)
    if kind == "date":
        return date.fromisoformat(value)
    return value
