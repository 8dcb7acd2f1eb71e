"""Erasure deletes every row that references a user: each table with a foreign key to
``users.id`` is in ``USER_ROWS`` (or is ``token_families``, whose children are in
``FAMILY_ROWS``), so a table added later fails here until the erasure knows it."""

from __future__ import annotations

from sqlalchemy import Table

from echo_identity.idp.models import TokenFamily
from echo_identity.privacy.erasure import FAMILY_ROWS, USER_ROWS
from echo_identity.schema import metadata


def _referencing(target: str) -> set[str]:
    """The tables with a foreign key to the ``target`` table."""
    return {
        table.name
        for table in metadata.sorted_tables
        for key in table.foreign_keys
        if key.column.table.name == target
    }


def _names(models: tuple[object, ...]) -> set[str]:
    tables: list[Table] = [model.__table__ for model in models]  # type: ignore[attr-defined]
    return {table.name for table in tables}


def test_every_table_that_references_a_user_is_deleted_by_the_erasure() -> None:
    referencing = _referencing("users")
    assert referencing  # the schema is loaded
    assert referencing == _names(USER_ROWS) | {TokenFamily.__tablename__}


def test_every_table_that_references_a_token_family_is_deleted_with_it() -> None:
    assert _referencing("token_families") == _names(FAMILY_ROWS)
