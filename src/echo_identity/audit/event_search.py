"""Filtered, cursor-paginated reads of the audit trail (``GET /api/v1/audit/events``).

Pages run newest first and are keyed on the event id (keyset pagination): the cursor names
the last id served, so events appended while a client pages never shift or repeat a page.

Parameters are read exactly as the OpenAPI document (:mod:`echo_identity.web.openapi`)
describes them: ``since``/``until`` are RFC 3339 date-times (an offset is required), ``limit``
an integer from 1 to 500, ``cursor`` the ``next_cursor`` of a page; a parameter that is present
but empty is invalid like any other value (400). A date-time that is valid RFC 3339 but lies
outside the years 1-9999 once converted to UTC (``9999-12-31T23:59:59-23:59``) is still an
instant: before or after every event, so it filters as the nearest representable one.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime
from typing import Any, cast

from sqlalchemy import RowMapping, Table, select
from sqlalchemy.orm import Session

from echo_identity.audit.chain import CHAINED_FIELDS
from echo_identity.audit.errors import InvalidEventQueryError
from echo_identity.audit.models import AuditEvent

EVENTS = cast(Table, AuditEvent.__table__)
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
FILTERS = ("type", "outcome", "client_id", "actor", "since", "until", "limit", "cursor")
# RFC 3339 §5.6 date-time ("T" and "Z" may be lowercase); Python parses what it matches.
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", re.ASCII)
_FIRST_MOMENT = datetime.min.replace(tzinfo=UTC)
_LAST_MOMENT = datetime.max.replace(tzinfo=UTC)
# A cursor is the id of the last event served: at most 18 digits fits a signed 64-bit id.
CURSOR_PATTERN = "^[1-9][0-9]{0,17}$"
_CURSOR = re.compile(CURSOR_PATTERN, re.ASCII)


@dataclass(frozen=True)
class EventQuery:
    """``event_type`` ending in ``.*`` matches the prefix (``auth.login.*``)."""

    event_type: str | None = None
    outcome: str | None = None
    client_id: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    before_id: int | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> EventQuery:
        """Parse query parameters; raises :class:`InvalidEventQueryError` naming the bad one."""
        unknown = sorted(set(args) - set(FILTERS))
        if unknown:
            raise InvalidEventQueryError(
                f"Unknown parameter {unknown[0]!r}; use {', '.join(FILTERS)}."
            )
        for name in ("type", "outcome", "client_id", "actor"):
            if len(args.get(name, "")) > 128:
                raise InvalidEventQueryError(f"{name} is longer than 128 characters.")
        return cls(
            event_type=args.get("type") or None,
            outcome=args.get("outcome") or None,
            client_id=args.get("client_id") or None,
            actor=args.get("actor") or None,
            since=_moment(args, "since"),
            until=_moment(args, "until"),
            limit=_limit(args.get("limit")),
            before_id=decode_cursor(args["cursor"]) if "cursor" in args else None,
        )


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]
    next_cursor: str | None


def _moment(args: Mapping[str, str], name: str) -> datetime | None:
    """The UTC instant of an RFC 3339 parameter, ``None`` when absent; raises
    :class:`InvalidEventQueryError` (empty, not RFC 3339, or not a calendar date)."""
    value = args.get(name)
    if value is None:
        return None
    text = value.upper()
    invalid = InvalidEventQueryError(
        f"{name} must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T09:30:00Z."
    )
    if not _DATE_TIME.fullmatch(text):
        raise invalid
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:  # month 13, year 0, a leap second, an offset of 24 hours or more
        raise invalid from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # a real instant beyond datetime's range: past every event
        return _LAST_MOMENT if moment.year == MAXYEAR else _FIRST_MOMENT


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    # ASCII digits only: "²" is a digit to str.isdigit, but not to int()
    well_formed = value.isascii() and value.isdigit() and len(value) <= 9
    if not well_formed or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidEventQueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
    return int(value)


def encode_cursor(event_id: int) -> str:
    return str(event_id)


def decode_cursor(cursor: str) -> int:
    """The event id a cursor names; raises :class:`InvalidEventQueryError`.

    Cursors issued before they became plain ids (base64 of ``before:<id>``) are still read.
    """
    if _CURSOR.fullmatch(cursor):
        return int(cursor)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    prefix, _, number = raw.partition(":")
    if prefix != "before" or not _CURSOR.fullmatch(number):
        raise InvalidEventQueryError("cursor is not one this API returned.")
    return int(number)


def search_events(session: Session, query: EventQuery) -> EventPage:
    """One page of events matching ``query``, newest first."""
    statement = select(EVENTS).order_by(EVENTS.c.id.desc()).limit(query.limit + 1)
    if query.event_type and query.event_type.endswith(".*"):
        prefix = query.event_type[:-1]
        for special in ("\\", "%", "_"):  # match the prefix literally
            prefix = prefix.replace(special, "\\" + special)
        statement = statement.where(EVENTS.c.event_type.like(prefix + "%", escape="\\"))
    elif query.event_type:
        statement = statement.where(EVENTS.c.event_type == query.event_type)
    if query.outcome:
        statement = statement.where(EVENTS.c.outcome == query.outcome)
    if query.client_id:
        statement = statement.where(EVENTS.c.client_id == query.client_id)
    if query.actor:
        statement = statement.where(EVENTS.c.actor == query.actor)
    if query.since:
        statement = statement.where(EVENTS.c.occurred_at >= query.since)
    if query.until:
        statement = statement.where(EVENTS.c.occurred_at < query.until)
    if query.before_id is not None:
        statement = statement.where(EVENTS.c.id < query.before_id)
    rows = list(session.execute(statement).mappings())
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return EventPage(
        events=[_public(row) for row in rows],
        next_cursor=encode_cursor(int(rows[-1]["id"])) if more and rows else None,
    )


def _public(row: RowMapping) -> dict[str, Any]:
    """The API shape of one stored event: the fields its chain hash covers (chain internals
    such as ``seq`` and ``hash`` stay out); tokens appear as fingerprints and details were
    redacted when recorded."""
    event = {name: row.get(name) for name in CHAINED_FIELDS}
    occurred: datetime = row["occurred_at"]
    event["occurred_at"] = occurred.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return event
