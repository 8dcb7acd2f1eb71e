"""audit retention: the signed anchor the chain starts from once old events are pruned

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 00:45:00.000000

- ``audit_chain_anchors``: a signed statement "the chain now starts at ``first_kept_seq``
  (event ``first_kept_event_id``), linking to ``previous_hash``; ``pruned_count`` events
  recorded between ``pruned_from`` and ``pruned_through`` were pruned". The pruner keeps one
  row, the newest (see :mod:`echo_identity.audit.retention`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import echo_identity.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = echo_identity.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_chain_anchors",
        sa.Column("id", EVENT_ID, nullable=False),
        sa.Column("first_kept_seq", sa.BigInteger(), nullable=False),
        sa.Column("first_kept_event_id", sa.BigInteger(), nullable=False),
        sa.Column("previous_hash", sa.String(length=64), nullable=False),
        sa.Column("pruned_count", sa.BigInteger(), nullable=False),
        sa.Column("pruned_from", UTC, nullable=False),
        sa.Column("pruned_through", UTC, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_anchors")),
        sa.UniqueConstraint("first_kept_seq", name=op.f("uq_audit_chain_anchors_first_kept_seq")),
    )


def downgrade() -> None:
    op.drop_table("audit_chain_anchors")
