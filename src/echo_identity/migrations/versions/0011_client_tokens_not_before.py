"""client token cut-off: ``oauth_clients.tokens_not_before``

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 01:40:00.000000

- ``oauth_clients.tokens_not_before``: an access token of the client issued before this moment
  is refused everywhere it is checked (``/verify``, ``/introspect``, ``/userinfo``, the bearer
  APIs). Client-credentials tokens belong to no token family and are not recorded one by
  one, so this cut-off is how ``clients revoke-tokens`` reaches them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import echo_identity.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.add_column(
            sa.Column(
                "tokens_not_before", echo_identity.db.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.drop_column("tokens_not_before")
