"""The schema lists every encrypted column for key rotation, each declared once."""

from __future__ import annotations

from sqlalchemy import inspect

from echo_identity.schema import ENCRYPTED_COLUMNS, metadata


def test_every_ciphertext_column_of_the_models_is_listed_for_rotation() -> None:
    # DEK rotation deletes the DEKs that no listed column references: a `*_ciphertext` column
    # missing from ENCRYPTED_COLUMNS would lose its secrets at the next rotation.
    in_models = {
        f"{table.name}.{column.name}"
        for table in metadata.tables.values()
        for column in table.columns
        if column.name.endswith("_ciphertext")
    }
    listed = [encrypted.name for encrypted in ENCRYPTED_COLUMNS]

    assert in_models, "no *_ciphertext column found: the models were not imported"
    assert sorted(in_models - set(listed)) == []
    assert sorted(set(listed) - in_models) == []
    assert len(listed) == len(set(listed)), "a column is listed twice"


def test_every_listed_context_is_bound_to_its_row_and_column() -> None:
    # Two columns with one context template would accept each other's ciphertexts.
    contexts = [encrypted.context for encrypted in ENCRYPTED_COLUMNS]
    assert len(set(contexts)) == len(contexts)
    for encrypted in ENCRYPTED_COLUMNS:
        table = inspect(encrypted.column.class_).local_table
        assert len(table.primary_key.columns) == 1, f"{encrypted.name}: {{row}} needs one key"
