"""Session expiry and the two session stores (database and Redis), which must behave alike.

Redis tests need a server at ECHO_TEST_REDIS_URL and run with ``-m redis``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import redis
from flask import Flask
from sqlalchemy import select

from echo_identity.accounts.models import BrowserSession
from echo_identity.accounts.session_cookie import (
    DEVELOPMENT_COOKIE,
    ServerSessionInterface,
    current_session,
)
from echo_identity.accounts.sessions import (
    RedisSessionStore,
    SessionPolicy,
    SessionRecord,
    SessionStore,
    SqlSessionStore,
)
from echo_identity.crypto.digests import lookup_digest, random_token
from echo_identity.db import Database, utcnow
from tests.factories import create_user

IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=10)
POLICY = SessionPolicy(idle=IDLE, absolute=ABSOLUTE)


def record(
    user_id: int | None,
    *,
    last_seen_ago: timedelta = timedelta(0),
    age: timedelta | None = None,
    now: datetime | None = None,
    **data: str,
) -> SessionRecord:
    """A session of ``user_id`` created ``age`` ago and last used ``last_seen_ago`` ago."""
    now = now or utcnow()
    age = last_seen_ago if age is None else age
    return SessionRecord(
        sid=lookup_digest(random_token()),
        user_id=user_id,
        created_at=now - age,
        last_seen_at=now - last_seen_ago,
        data=dict(data),
        ip="203.0.113.7",
        user_agent="pytest",
    )


# --- SessionPolicy (pure) -----------------------------------------------------------------


def test_session_expires_once_idle_for_the_idle_timeout() -> None:
    now = utcnow()
    session = record(1, last_seen_ago=timedelta(0), now=now)

    assert not POLICY.expired(session, now + IDLE - timedelta(seconds=1))
    assert POLICY.expired(session, now + IDLE)


def test_session_expires_at_the_absolute_timeout_even_when_in_use() -> None:
    now = utcnow()
    session = record(1, last_seen_ago=timedelta(0), age=ABSOLUTE - timedelta(minutes=5), now=now)

    assert POLICY.expires_at(session) == session.created_at + ABSOLUTE
    assert not POLICY.expired(session, now + timedelta(minutes=4))
    assert POLICY.expired(session, now + timedelta(minutes=5))


# --- Behaviour both stores share ----------------------------------------------------------


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(os.environ["ECHO_TEST_REDIS_URL"])
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = "echo-test-" + secrets.token_hex(8)
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def redis_store(redis_client: redis.Redis, redis_prefix: str) -> RedisSessionStore:
    return RedisSessionStore(redis_client, POLICY, prefix=redis_prefix)


@pytest.fixture
def sql_store(database: Database) -> SqlSessionStore:
    return SqlSessionStore(database, POLICY)


@pytest.fixture(params=["sql", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> SessionStore:
    store: SessionStore = request.getfixturevalue(f"{request.param}_store")
    return store


@pytest.fixture
def user_ids(database: Database) -> tuple[int, int]:
    """Two users (real rows, so the database store's foreign key holds)."""
    return create_user(database).id, create_user(database).id


def test_put_then_get_returns_the_same_record(
    store: SessionStore, user_ids: tuple[int, int]
) -> None:
    session = record(
        user_ids[0],
        last_seen_ago=timedelta(minutes=1),
        age=timedelta(hours=1),
        csrf="c-1",
        next="/account",
    )

    store.put(session)

    assert store.get(session.sid) == session


def test_anonymous_session_round_trips(store: SessionStore) -> None:
    session = record(None, flash="hello")

    store.put(session)

    assert store.get(session.sid) == session


def test_put_of_an_existing_sid_replaces_the_record(
    store: SessionStore, user_ids: tuple[int, int]
) -> None:
    session = record(user_ids[0], last_seen_ago=timedelta(minutes=10))
    store.put(session)

    session.last_seen_at = utcnow()
    session.data = {"step": "2"}
    store.put(session)

    assert store.get(session.sid) == session
    assert [s.sid for s in store.for_user(user_ids[0])] == [session.sid]


def test_get_of_an_unknown_sid_is_none(store: SessionStore) -> None:
    assert store.get(lookup_digest(random_token())) is None


def test_delete_removes_the_session_from_get_and_for_user(
    store: SessionStore, user_ids: tuple[int, int]
) -> None:
    kept, deleted = record(user_ids[0]), record(user_ids[0])
    store.put(kept)
    store.put(deleted)

    store.delete(deleted.sid)

    assert store.get(deleted.sid) is None
    assert [s.sid for s in store.for_user(user_ids[0])] == [kept.sid]


def test_for_user_lists_only_that_users_live_sessions_newest_first(
    store: SessionStore, user_ids: tuple[int, int]
) -> None:
    alice, bob = user_ids
    older = record(alice, last_seen_ago=timedelta(minutes=20))
    newest = record(alice, last_seen_ago=timedelta(minutes=1))
    middle = record(alice, last_seen_ago=timedelta(minutes=5), age=timedelta(hours=2))
    idle_expired = record(alice, last_seen_ago=IDLE + timedelta(minutes=1))
    too_old = record(alice, last_seen_ago=timedelta(minutes=1), age=ABSOLUTE)
    for session in (older, idle_expired, newest, too_old, middle, record(bob)):
        store.put(session)

    listed = store.for_user(alice)

    assert [s.sid for s in listed] == [newest.sid, middle.sid, older.sid]


def test_delete_for_user_ends_every_session_of_that_user_only(
    store: SessionStore, user_ids: tuple[int, int]
) -> None:
    alice, bob = user_ids
    alice_sessions = [record(alice), record(alice, last_seen_ago=timedelta(minutes=3))]
    bobs = record(bob)
    for session in (*alice_sessions, bobs):
        store.put(session)

    ended = store.delete_for_user(alice)

    assert ended == 2
    assert store.for_user(alice) == []
    assert all(store.get(s.sid) is None for s in alice_sessions)
    assert store.get(bobs.sid) == bobs


def test_store_keeps_only_the_digest_of_the_cookie_token(
    store: SessionStore, user_ids: tuple[int, int]
) -> None:
    token = log_in_through_the_cookie(store, user_ids[0])

    (session,) = store.for_user(user_ids[0])
    assert session.sid == lookup_digest(token)
    assert token not in repr(session)


def log_in_through_the_cookie(store: SessionStore, user_id: int) -> str:
    """Log ``user_id`` in through the real session interface; returns the cookie's token."""
    app = Flask(__name__)
    app.session_interface = ServerSessionInterface(store, secure=False)

    @app.post("/login")
    def login() -> str:
        current_session().start_login(user_id)
        return ""

    client = app.test_client()
    assert client.post("/login").status_code == 200
    cookie = client.get_cookie(DEVELOPMENT_COOKIE)
    assert cookie is not None
    return cookie.value


# --- Database store -----------------------------------------------------------------------


def test_sql_purge_expired_deletes_idle_and_too_old_sessions_only(
    sql_store: SqlSessionStore, user_ids: tuple[int, int]
) -> None:
    alice = user_ids[0]
    live = record(
        alice, last_seen_ago=IDLE - timedelta(minutes=1), age=ABSOLUTE - timedelta(hours=1)
    )
    idle_expired = record(alice, last_seen_ago=IDLE + timedelta(seconds=1))
    too_old = record(alice, last_seen_ago=timedelta(0), age=ABSOLUTE + timedelta(seconds=1))
    for session in (live, idle_expired, too_old):
        sql_store.put(session)

    assert sql_store.purge_expired() == 2

    assert sql_store.get(live.sid) == live
    assert sql_store.get(idle_expired.sid) is None
    assert sql_store.get(too_old.sid) is None


def test_sql_rows_hold_no_cookie_token(
    sql_store: SqlSessionStore, database: Database, user_ids: tuple[int, int]
) -> None:
    token = log_in_through_the_cookie(sql_store, user_ids[0])

    with database.session() as session:
        rows = session.execute(select(BrowserSession.__table__)).all()
    assert [row.id for row in rows] == [lookup_digest(token)]
    assert all(token not in str(value) for row in rows for value in row)


# --- Redis store --------------------------------------------------------------------------


def redis_contents(client: redis.Redis, prefix: str) -> dict[str, str]:
    """Every key under ``prefix`` with its value, or its set members, as text."""
    contents: dict[str, str] = {}
    for key in client.scan_iter(match=f"{prefix}:*"):
        values = client.smembers(key) if client.type(key) == b"set" else {client.get(key)}
        contents[key.decode()] = " ".join(
            sorted(v.decode() if isinstance(v, bytes) else str(v) for v in values)
        )
    return contents


@pytest.mark.redis
def test_redis_values_hold_no_cookie_token(
    redis_store: RedisSessionStore,
    redis_client: redis.Redis,
    redis_prefix: str,
    user_ids: tuple[int, int],
) -> None:
    token = log_in_through_the_cookie(redis_store, user_ids[0])

    contents = redis_contents(redis_client, redis_prefix)
    assert f"{redis_prefix}:session:{lookup_digest(token)}" in contents
    assert all(token not in key for key in contents)
    assert all(token not in value for value in contents.values())


@pytest.mark.redis
def test_redis_session_ttl_ends_at_the_idle_timeout(
    redis_store: RedisSessionStore, redis_client: redis.Redis, redis_prefix: str
) -> None:
    session = record(7)

    redis_store.put(session)

    ttl = redis_client.ttl(f"{redis_prefix}:session:{session.sid}")
    assert IDLE.total_seconds() - 5 <= ttl <= IDLE.total_seconds()


@pytest.mark.redis
def test_redis_session_ttl_ends_at_the_absolute_timeout_when_that_comes_first(
    redis_store: RedisSessionStore, redis_client: redis.Redis, redis_prefix: str
) -> None:
    session = record(7, last_seen_ago=timedelta(0), age=ABSOLUTE - timedelta(minutes=10))

    redis_store.put(session)

    ttl = redis_client.ttl(f"{redis_prefix}:session:{session.sid}")
    assert 600 - 5 <= ttl <= 600


@pytest.mark.redis
def test_redis_expired_session_is_left_for_redis_to_drop_at_once(
    redis_store: RedisSessionStore, redis_client: redis.Redis, redis_prefix: str
) -> None:
    session = record(7, last_seen_ago=IDLE + timedelta(minutes=1))

    redis_store.put(session)

    assert 0 < redis_client.pttl(f"{redis_prefix}:session:{session.sid}") <= 1000


@pytest.mark.redis
def test_redis_user_index_expires_no_later_than_the_absolute_timeout(
    redis_store: RedisSessionStore, redis_client: redis.Redis, redis_prefix: str
) -> None:
    first, second = record(7), record(7)
    index = f"{redis_prefix}:user-sessions:7"

    redis_store.put(first)
    assert 0 < redis_client.ttl(index) <= IDLE.total_seconds()
    redis_store.put(second)

    assert IDLE.total_seconds() < redis_client.ttl(index) <= ABSOLUTE.total_seconds()
    assert all(redis_client.ttl(key) > 0 for key in redis_contents(redis_client, redis_prefix))
