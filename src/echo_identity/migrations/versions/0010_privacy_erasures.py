"""privacy erasures: how far each user's erasure got, so an interrupted one can be rerun

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 01:00:00.000000

- ``privacy_erasures``: one row per erased (or being erased) user: the pseudonym, the ``sub``
  (until the erasure completes), the former ``users.id`` (owner of the user's data keys and
  sessions), who asked, and when each of the five steps finished. No foreign key: it
  outlives the ``users`` row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import echo_identity.db

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UTC = echo_identity.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "privacy_erasures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sub", sa.String(length=36), nullable=True),
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.String(length=16), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("upstream_failures", sa.Integer(), nullable=False),
        sa.Column("upstream_revoked_at", UTC, nullable=True),
        sa.Column("credentials_revoked_at", UTC, nullable=True),
        sa.Column("data_keys_destroyed_at", UTC, nullable=True),
        sa.Column("rows_deleted_at", UTC, nullable=True),
        sa.Column("pseudonym_forgotten_at", UTC, nullable=True),
        sa.Column("completed_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_erasures")),
        sa.UniqueConstraint("pseudonym", name=op.f("uq_privacy_erasures_pseudonym")),
    )


def downgrade() -> None:
    op.drop_table("privacy_erasures")
