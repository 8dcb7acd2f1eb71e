"""security hardening: per-user token not-before, services named in vault consent, refusal windows

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 15:30:00.000000

- ``users.tokens_not_before``: disabling a user or changing their password kills every
  credential minted before this moment (codes, token families and their access tokens).
- ``vault_consents.client_ids``: the services a consent covers. Consents given before this
  revision named no service; they are filled with the clients registered for the provider
  today, which are exactly the services that could fetch the token until now (no user loses
  a working integration, and no service gains one).
- ``audit_refusal_windows``: counters for repeated identical refusals (one audit event per
  window instead of one per request).
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

import echo_identity.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UTC = echo_identity.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("tokens_not_before", UTC, nullable=True))
    with op.batch_alter_table("vault_consents") as batch:
        batch.add_column(sa.Column("client_ids", sa.JSON(), nullable=True))
    _backfill_consented_clients()
    with op.batch_alter_table("vault_consents") as batch:
        batch.alter_column("client_ids", existing_type=sa.JSON(), nullable=False)
    op.create_table(
        "audit_refusal_windows",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("window_started_at", UTC, nullable=False),
        sa.Column("last_seen_at", UTC, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_audit_refusal_windows")),
    )
    op.create_index(
        op.f("ix_audit_refusal_windows_last_seen_at"),
        "audit_refusal_windows",
        ["last_seen_at"],
        unique=False,
    )


def _backfill_consented_clients() -> None:
    bind = op.get_bind()
    clients = bind.execute(sa.text("SELECT client_id, vault_providers FROM oauth_clients")).all()
    by_provider: dict[str, list[str]] = {}
    for client_id, providers in clients:
        names = json.loads(providers) if isinstance(providers, str) else (providers or [])
        for name in names:
            by_provider.setdefault(name, []).append(client_id)
    consents = bind.execute(sa.text("SELECT id, provider_name FROM vault_consents")).all()
    for consent_id, provider_name in consents:
        bind.execute(
            sa.text("UPDATE vault_consents SET client_ids = :ids WHERE id = :id").bindparams(
                sa.bindparam("ids", type_=sa.JSON())
            ),
            {"ids": sorted(by_provider.get(provider_name, [])), "id": consent_id},
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_refusal_windows_last_seen_at"), table_name="audit_refusal_windows")
    op.drop_table("audit_refusal_windows")
    with op.batch_alter_table("vault_consents") as batch:
        batch.drop_column("client_ids")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tokens_not_before")
