"""An encrypted column's declaration: the one source of its context and owner."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import InstrumentedAttribute

from echo_identity.keys.columns import EncryptedColumn
from echo_identity.keys.keyring import SYSTEM_OWNER, USER_OWNER
from echo_identity.vault.models import Connection, Provider


def test_context_and_owner_are_formatted_from_the_row_and_its_owner_column() -> None:
    column = EncryptedColumn(
        Connection.access_token_ciphertext,
        context="connection:{row}:access_token",
        owner=USER_OWNER,
        owner_column=Connection.user_id,
    )

    assert column.context_for(42) == "connection:42:access_token"
    assert column.owner_for(7) == "user:7"
    assert column.name == "vault_connections.access_token_ciphertext"


def test_a_fixed_owner_ignores_the_owner_value() -> None:
    column = EncryptedColumn(
        Provider.client_secret_ciphertext, context="provider:{row}:secret", owner=SYSTEM_OWNER
    )

    assert column.owner_for() == column.owner_for(7) == "system"


def test_an_owner_template_needs_the_owner_value() -> None:
    column = EncryptedColumn(
        Connection.refresh_token_ciphertext,
        context="connection:{row}:refresh_token",
        owner=USER_OWNER,
        owner_column=Connection.user_id,
    )

    with pytest.raises(ValueError, match="owner column"):
        column.owner_for()


@pytest.mark.parametrize(
    "context",
    ["connection:access_token", "connection:{row}:{row}", "connection:{id}", "c:{{row}}:{row}"],
)
def test_a_context_must_name_the_row_once_and_nothing_else(context: str) -> None:
    with pytest.raises(ValueError, match="context"):
        EncryptedColumn(Provider.client_secret_ciphertext, context=context, owner=SYSTEM_OWNER)


@pytest.mark.parametrize(
    ("owner", "owner_column"),
    [
        ("user:{owner}", None),  # a template without a column to fill it
        ("system", Connection.user_id),  # a column whose value would be ignored
        ("user:{owner}:{owner}", Connection.user_id),
        ("user:{id}", Connection.user_id),
    ],
)
def test_an_owner_template_matches_its_owner_column(
    owner: str, owner_column: InstrumentedAttribute[Any] | None
) -> None:
    with pytest.raises(ValueError, match="owner"):
        EncryptedColumn(
            Connection.access_token_ciphertext,
            context="connection:{row}:access_token",
            owner=owner,
            owner_column=owner_column,
        )
