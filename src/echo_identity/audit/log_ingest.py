"""Application logs sent to /log: parsing, redaction and storage.

A body is one JSON object or a JSON array of them (a batch); each object has ``level``
(debug, info, warning, error, critical), ``message``, and optionally ``timestamp`` (ISO 8601
with a zone, or Unix seconds) and ``fields`` (an object). Anything else is refused as a whole:
a batch is stored entirely or not at all. The body is read with
:func:`~echo_identity.web.json_input.parse_json`: nesting deeper than its limit, NUL characters
and lone surrogates are refused before anything is redacted or stored (so a 900-deep ``fields``
never reaches the recursive redaction). Messages and fields pass the same redaction as the
application's own log lines before they are stored. The errors (all HTTP 400) are drawn in
:mod:`echo_identity.audit.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from echo_identity.audit.errors import BatchTooLargeError, InvalidLogEventError, UnknownLevelError
from echo_identity.audit.log_models import ApplicationLog
from echo_identity.db import utcnow
from echo_identity.logs import redact_value, scrub_text
from echo_identity.web.json_input import parse_json

LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_MESSAGE_CHARS = 8192
_KEYS = {"level", "message", "timestamp", "fields"}
_INSERT = cast(Table, ApplicationLog.__table__).insert()


@dataclass(frozen=True)
class LogEntry:
    level: str
    message: str
    occurred_at: datetime | None
    fields: dict[str, Any]


def parse_log_body(raw: bytes, *, max_batch: int) -> list[LogEntry]:
    """The redacted entries of a /log body.

    Raises a :class:`~echo_identity.audit.errors.LogBodyError` subclass or
    :class:`~echo_identity.web.json_input.InvalidJsonError` (see the module docstring).
    """
    document = parse_json(raw)
    items = document if isinstance(document, list) else [document]
    if not items:
        raise InvalidLogEventError("Send at least one log event.")
    if len(items) > max_batch:
        raise BatchTooLargeError(f"Send at most {max_batch} log events per request.")
    return [_entry(index, item) for index, item in enumerate(items)]


def _entry(index: int, item: Any) -> LogEntry:
    where = f"event {index}"
    if not isinstance(item, dict):
        raise InvalidLogEventError(f"{where} is not a JSON object.")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise InvalidLogEventError(
            f"{where} has unknown keys {unknown}; allowed: level, message, timestamp, fields."
        )
    level = item.get("level")
    if not isinstance(level, str) or level.lower() not in LEVELS:
        raise UnknownLevelError(f"{where}: level must be one of {', '.join(LEVELS)}.")
    message = item.get("message")
    if not isinstance(message, str) or not message.strip():
        raise InvalidLogEventError(f"{where}: message must be a non-empty string.")
    if len(message) > MAX_MESSAGE_CHARS:
        raise InvalidLogEventError(f"{where}: message is longer than {MAX_MESSAGE_CHARS}.")
    fields = item.get("fields", {})
    if not isinstance(fields, dict):
        raise InvalidLogEventError(f"{where}: fields must be a JSON object.")
    return LogEntry(
        level=level.lower(),
        message=scrub_text(message),
        occurred_at=_timestamp(where, item.get("timestamp")),
        fields=redact_value("fields", fields),
    )


def _timestamp(where: str, value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise InvalidLogEventError(
        f"{where}: timestamp must be ISO 8601 with a time zone, or Unix seconds."
    )


def store_log_entries(
    session: Session, source: str, entries: list[LogEntry], request_id: str | None
) -> int:
    """Insert every entry for ``source`` in the caller's transaction (it commits)."""
    now = utcnow()
    session.execute(
        _INSERT,
        [
            {
                "received_at": now,
                "occurred_at": entry.occurred_at,
                "source": source[:64],
                "level": entry.level,
                "message": entry.message,
                "fields": entry.fields,
                "request_id": request_id,
            }
            for entry in entries
        ],
    )
    return len(entries)


def logs_for_source(session: Session, source: str, limit: int = 100) -> list[ApplicationLog]:
    """The newest ``limit`` application-log events of one source, newest first."""
    return list(
        session.scalars(
            select(ApplicationLog)
            .where(ApplicationLog.source == source)
            .order_by(ApplicationLog.received_at.desc(), ApplicationLog.id.desc())
            .limit(limit)
        )
    )
