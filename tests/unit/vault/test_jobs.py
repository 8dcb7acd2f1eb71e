"""The vault's worker jobs: due connections are refreshed once each, failures are counted
without stopping the others, and dead tokens are dropped and recorded."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from echo_identity.audit.models import AuditEvent
from echo_identity.audit.service import AuditTrail
from echo_identity.db import Database
from echo_identity.vault.jobs import claim_due, expire_dead_tokens, refresh_due_connections
from echo_identity.vault.models import Connection
from tests.unit.vault.conftest import (
    REFRESH_WINDOW,
    TOKEN_LIFETIME,
    Connected,
    connect,
    new_user,
)

IN_THE_WINDOW = TOKEN_LIFETIME - 60  # seconds after connecting: due, not yet expired


def _connections(database: Database) -> dict[int, Connection]:
    with database.read_session() as session:
        found = {c.id: c for c in session.scalars(select(Connection))}
        session.expunge_all()
        return found


def _another(connected: Connected) -> Connection:
    """A second user's connection to the same provider."""
    user = new_user(connected.database, connected.session)
    return connect(connected.service, connected.session, user, connected.acme)


def test_only_connections_past_their_refresh_time_are_claimed(connected: Connected) -> None:
    due_at = connected.clock.now + timedelta(seconds=TOKEN_LIFETIME) - REFRESH_WINDOW
    assert claim_due(connected.database, due_at - timedelta(seconds=1)) == []
    assert claim_due(connected.database, due_at) == [connected.connection.id]


def test_each_due_connection_is_refreshed_once(connected: Connected) -> None:
    database, provider = connected.database, connected.provider
    second = _another(connected)
    now = connected.clock.advance(IN_THE_WINDOW)
    result = refresh_due_connections(database, connected.vault, now)
    assert (result.refreshed, result.failed) == (2, 0)
    assert provider.refreshes() == 2
    stored = _connections(database)
    for connection_id in (connected.connection.id, second.id):
        due = stored[connection_id].refresh_due_at
        assert due is not None
        assert due > now
    again = refresh_due_connections(database, connected.vault, now)
    assert (again.refreshed, again.failed) == (0, 0)
    assert provider.refreshes() == 2


def test_a_refused_refresh_is_counted_and_the_other_connections_still_refresh(
    connected: Connected,
) -> None:
    provider = connected.provider
    provider.live_refresh_tokens.discard(provider.issued_refresh_tokens[0])  # withdrawn
    second = _another(connected)
    now = connected.clock.advance(IN_THE_WINDOW)
    result = refresh_due_connections(connected.database, connected.vault, now)
    assert (result.refreshed, result.failed) == (1, 1)
    stored = _connections(connected.database)
    assert stored[connected.connection.id].status == "needs_reauth"
    assert stored[second.id].status == "active"


def test_a_connection_that_crashes_is_rolled_back_and_counted_without_stopping_the_others(
    connected: Connected,
) -> None:
    database, broken = connected.database, connected.connection
    second = _another(connected)
    with database.transaction() as writer:  # a refresh token copied from another row
        writer.execute(
            update(Connection)
            .where(Connection.id == broken.id)
            .values(
                refresh_token_ciphertext=select(Connection.refresh_token_ciphertext)
                .where(Connection.id == second.id)
                .scalar_subquery()
            )
        )
    now = connected.clock.advance(IN_THE_WINDOW)
    result = refresh_due_connections(database, connected.vault, now)
    assert (result.refreshed, result.failed) == (1, 1)
    assert connected.provider.refreshes() == 1
    assert _connections(database)[broken.id].refresh_failures == 0  # nothing was written


def _drop_refresh_token(database: Database, connection_id: int) -> None:
    with database.transaction() as writer:
        writer.execute(
            update(Connection)
            .where(Connection.id == connection_id)
            .values(refresh_token_ciphertext=None)
        )


def test_expired_tokens_without_a_refresh_token_are_dropped_and_recorded(
    connected: Connected, audit: AuditTrail
) -> None:
    database, dead_id = connected.database, connected.connection.id
    refreshable = _another(connected)
    _drop_refresh_token(database, dead_id)
    now = connected.clock.advance(TOKEN_LIFETIME + 1)
    assert expire_dead_tokens(database, audit, now) == 1
    stored = _connections(database)
    dead = stored[dead_id]
    assert (dead.access_token_ciphertext, dead.status, dead.refresh_due_at) == (
        None,
        "expired",
        None,
    )
    assert stored[refreshable.id].access_token_ciphertext is not None
    with database.read_session() as reader:
        recorded = reader.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "vault.token.expired")
        ).all()
        assert [(e.actor, e.details) for e in recorded] == [("worker", {"connection_id": dead_id})]
    assert expire_dead_tokens(database, audit, now) == 0


def test_a_token_not_yet_expired_is_kept(connected: Connected, audit: AuditTrail) -> None:
    _drop_refresh_token(connected.database, connected.connection.id)
    now = connected.clock.advance(TOKEN_LIFETIME - 1)
    assert expire_dead_tokens(connected.database, audit, now) == 0
