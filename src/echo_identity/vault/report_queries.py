"""What the token vault contributes to the security report (``echo_identity.reports``): the
connections that wait for their user to re-authenticate at the provider."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from echo_identity.vault.models import Connection, Provider

MAX_LISTED_CONNECTIONS = 100


@dataclass(frozen=True)
class ReauthConnection:
    connection_id: int
    provider: str
    since: str  # when the connection last changed (it turned needs_reauth then or before)
    refresh_failures: int


def connections_needing_reauth(
    session: Session, limit: int = MAX_LISTED_CONNECTIONS
) -> tuple[int, list[ReauthConnection]]:
    """How many connections need re-authentication, and the ``limit`` longest waiting."""
    waiting = Connection.status == "needs_reauth"
    total = session.scalar(select(func.count()).select_from(Connection).where(waiting))
    rows = session.execute(
        select(Connection.id, Provider.name, Connection.updated_at, Connection.refresh_failures)
        .join(Provider, Provider.id == Connection.provider_id)
        .where(waiting)
        .order_by(Connection.updated_at, Connection.id)
        .limit(limit)
    )
    listed = [
        ReauthConnection(
            int(cid),
            str(name),
            updated.astimezone(UTC).isoformat(timespec="seconds"),
            int(failures or 0),
        )
        for cid, name, updated, failures in rows
    ]
    return int(total or 0), listed
