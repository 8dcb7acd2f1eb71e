"""vault_connections keeps half of each page free, so DEK rotation updates rows in place

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 18:00:00.000000

DEK rotation rewrites both token ciphertexts of every connection and no indexed column. With
room left in the row's page, PostgreSQL writes the new row version there (a HOT update) and
touches none of the table's six indexes; without it, every row gets a new entry in all six.
One rotation batch updates every row of a page in one transaction, so the room must hold a
whole page of new versions: fillfactor 50. The price is a heap twice the packed size. Pages
written before this migration keep no room until they are rewritten (a first rotation, then
VACUUM, or VACUUM FULL). SQLite has no fillfactor; nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE vault_connections SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE vault_connections RESET (fillfactor)")
