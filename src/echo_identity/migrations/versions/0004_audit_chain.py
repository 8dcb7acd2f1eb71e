"""audit hash chain, checkpoints and pseudonyms

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import echo_identity.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("chain_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_audit_events_chain_seq"), ["chain_seq"], unique=True)

    op.create_table(
        "audit_checkpoints",
        sa.Column("id", EVENT_ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_through", echo_identity.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", echo_identity.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_checkpoints_seq")),
    )
    op.create_table(
        "audit_signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("private_key_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", echo_identity.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_audit_signing_keys")),
    )
    op.create_table(
        "audit_pseudonyms",
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column("user_sub", sa.String(length=255), nullable=False),
        sa.Column("created_at", echo_identity.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pseudonym", name=op.f("pk_audit_pseudonyms")),
    )
    with op.batch_alter_table("audit_pseudonyms", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_pseudonyms_user_sub"), ["user_sub"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("audit_pseudonyms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_pseudonyms_user_sub"))
    op.drop_table("audit_pseudonyms")
    op.drop_table("audit_signing_keys")
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_events_chain_seq"))
        batch_op.drop_column("chain_hash")
        batch_op.drop_column("chain_seq")
