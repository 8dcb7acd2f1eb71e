"""Alembic environment: runs against the engine handed over by ``echo_identity.migrations``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Engine

from echo_identity.schema import metadata

engine: Engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
