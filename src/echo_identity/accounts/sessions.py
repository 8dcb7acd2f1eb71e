"""Server-side browser session storage: the database by default, Redis when configured.

The cookie carries only a random 256-bit id; stores key sessions by the id's SHA-256 digest
(``sid``), so a database or Redis dump holds nothing a browser could present. Expiry follows
:class:`SessionPolicy` in both stores: idle timeout since the last request, absolute timeout
since login.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import redis
from sqlalchemy import delete, or_, select

from echo_identity.accounts.models import BrowserSession
from echo_identity.db import Database, utcnow


@dataclass
class SessionRecord:
    sid: str
    user_id: int | None
    created_at: datetime
    last_seen_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class SessionPolicy:
    idle: timedelta
    absolute: timedelta

    def expires_at(self, record: SessionRecord) -> datetime:
        return min(record.last_seen_at + self.idle, record.created_at + self.absolute)

    def expired(self, record: SessionRecord, now: datetime) -> bool:
        return now >= self.expires_at(record)


@runtime_checkable  # request code asks the app for it by type: ``service(SessionStore)``
class SessionStore(Protocol):
    """Where browser sessions live (:class:`SqlSessionStore`, :class:`RedisSessionStore`)."""

    policy: SessionPolicy

    def get(self, sid: str) -> SessionRecord | None:
        """The stored record, or ``None`` when absent (expired records may be returned)."""

    def put(self, record: SessionRecord) -> None: ...

    def delete(self, sid: str) -> None: ...

    def for_user(self, user_id: int) -> list[SessionRecord]:
        """The user's unexpired sessions, most recently used first."""

    def delete_for_user(self, user_id: int) -> int:
        """End every session of ``user_id``; returns how many were ended."""

    def purge_expired(self) -> int:
        """Delete expired sessions; returns how many were deleted."""


def _record_from_row(row: BrowserSession) -> SessionRecord:
    return SessionRecord(
        sid=row.id,
        user_id=row.user_id,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        data=dict(row.data or {}),
        ip=row.ip,
        user_agent=row.user_agent,
    )


class SqlSessionStore:
    """Sessions in the ``browser_sessions`` table, each operation its own transaction."""

    def __init__(self, database: Database, policy: SessionPolicy) -> None:
        self._database = database
        self.policy = policy

    def get(self, sid: str) -> SessionRecord | None:
        with self._database.read_session() as session:
            row = session.get(BrowserSession, sid)
            return _record_from_row(row) if row else None

    def put(self, record: SessionRecord) -> None:
        with self._database.transaction() as session:
            session.merge(
                BrowserSession(
                    id=record.sid,
                    user_id=record.user_id,
                    data=record.data,
                    created_at=record.created_at,
                    last_seen_at=record.last_seen_at,
                    ip=record.ip,
                    user_agent=record.user_agent,
                )
            )

    def delete(self, sid: str) -> None:
        with self._database.transaction() as session:
            session.execute(delete(BrowserSession).where(BrowserSession.id == sid))

    def for_user(self, user_id: int) -> list[SessionRecord]:
        now = utcnow()
        with self._database.read_session() as session:
            rows = session.scalars(
                select(BrowserSession)
                .where(BrowserSession.user_id == user_id)
                .order_by(BrowserSession.last_seen_at.desc())
            ).all()
        records = [_record_from_row(row) for row in rows]
        return [r for r in records if not self.policy.expired(r, now)]

    def delete_for_user(self, user_id: int) -> int:
        with self._database.transaction() as session:
            result = session.execute(
                delete(BrowserSession).where(BrowserSession.user_id == user_id)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def purge_expired(self) -> int:
        now = utcnow()
        with self._database.transaction() as session:
            result = session.execute(
                delete(BrowserSession).where(
                    or_(
                        BrowserSession.last_seen_at <= now - self.policy.idle,
                        BrowserSession.created_at <= now - self.policy.absolute,
                    )
                )
            )
        return int(result.rowcount)  # type: ignore[attr-defined]


class RedisSessionStore:
    """Sessions as JSON values expiring with the policy (Redis TTL); a per-user set indexes them."""

    def __init__(self, client: redis.Redis, policy: SessionPolicy, prefix: str = "echo") -> None:
        self._redis = client
        self.policy = policy
        self._prefix = prefix

    def _key(self, sid: str) -> str:
        return f"{self._prefix}:session:{sid}"

    def _user_key(self, user_id: int) -> str:
        return f"{self._prefix}:user-sessions:{user_id}"

    def get(self, sid: str) -> SessionRecord | None:
        raw = self._redis.get(self._key(sid))
        return _decode(raw) if raw else None

    def put(self, record: SessionRecord) -> None:
        ttl = max(1, int((self.policy.expires_at(record) - utcnow()).total_seconds()))
        pipe = self._redis.pipeline()
        pipe.set(self._key(record.sid), _encode(record), ex=ttl)
        if record.user_id is not None:
            user_key = self._user_key(record.user_id)
            pipe.sadd(user_key, record.sid)
            pipe.expire(user_key, int(self.policy.absolute.total_seconds()), gt=True)
            pipe.expire(user_key, ttl, nx=True)
        pipe.execute()

    def delete(self, sid: str) -> None:
        record = self.get(sid)
        pipe = self._redis.pipeline()
        pipe.delete(self._key(sid))
        if record is not None and record.user_id is not None:
            pipe.srem(self._user_key(record.user_id), sid)
        pipe.execute()

    def for_user(self, user_id: int) -> list[SessionRecord]:
        sids = sorted(_text(s) for s in self._redis.smembers(self._user_key(user_id)))
        if not sids:
            return []
        values = self._redis.mget([self._key(sid) for sid in sids])
        stale = [sid for sid, raw in zip(sids, values, strict=True) if raw is None]
        if stale:
            self._redis.srem(self._user_key(user_id), *stale)
        now = utcnow()
        records = [_decode(raw) for raw in values if raw is not None]
        live = [r for r in records if not self.policy.expired(r, now)]
        return sorted(live, key=lambda r: r.last_seen_at, reverse=True)

    def delete_for_user(self, user_id: int) -> int:
        sids = [_text(s) for s in self._redis.smembers(self._user_key(user_id))]
        pipe = self._redis.pipeline()
        for sid in sids:
            pipe.delete(self._key(sid))
        pipe.delete(self._user_key(user_id))
        results = pipe.execute()
        return sum(int(n) for n in results[: len(sids)])

    def purge_expired(self) -> int:
        """Redis expires keys itself; stale index entries are dropped by :meth:`for_user`."""
        return 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _encode(record: SessionRecord) -> str:
    return json.dumps(
        {
            "sid": record.sid,
            "user_id": record.user_id,
            "data": record.data,
            "created_at": record.created_at.isoformat(),
            "last_seen_at": record.last_seen_at.isoformat(),
            "ip": record.ip,
            "user_agent": record.user_agent,
        }
    )


def _decode(raw: bytes | str) -> SessionRecord:
    value = json.loads(raw)
    return SessionRecord(
        sid=value["sid"],
        user_id=value["user_id"],
        data=value["data"],
        created_at=datetime.fromisoformat(value["created_at"]),
        last_seen_at=datetime.fromisoformat(value["last_seen_at"]),
        ip=value["ip"],
        user_agent=value["user_agent"],
    )
