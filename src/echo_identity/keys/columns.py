"""The declaration of a column that holds envelope ciphertexts (:class:`EncryptedColumn`).

Each domain declares each of its encrypted columns once, next to its models. The code that
writes or reads a value takes the encryption context and the owner from that declaration
(:meth:`EncryptedColumn.context_for`, :meth:`EncryptedColumn.owner_for`), and key rotation
re-encrypts the columns of the list it is given (``schema.ENCRYPTED_COLUMNS``), so the two can
never disagree on a context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import InstrumentedAttribute

__all__ = ["EncryptedColumn"]


@dataclass(frozen=True)
class EncryptedColumn:
    """A column of envelope ciphertexts: whose DEK encrypts it and the context that binds each
    value to its row and column.

    ``context`` is formatted with ``row`` (the row's primary key) and must name ``{row}``
    exactly once. ``owner`` is formatted with ``owner`` (the row's value of ``owner_column``);
    without an owner column it is a fixed owner such as ``system`` and has no placeholder.

    Raises (on construction):
        ValueError: ``context`` has a brace besides the one ``{row}``; or ``owner`` has a
            brace besides one ``{owner}`` while there is an ``owner_column``, or any brace
            while there is none.
    """

    column: InstrumentedAttribute[Any]
    context: str
    owner: str
    owner_column: InstrumentedAttribute[Any] | None = None

    def __post_init__(self) -> None:
        if not _names_once(self.context, "{row}"):
            raise ValueError(f"context {self.context!r} must name {{row}} once and no other brace")
        if self.owner_column is None:
            valid_owner = _no_brace(self.owner)
        else:
            valid_owner = _names_once(self.owner, "{owner}")
        if not valid_owner:
            raise ValueError(
                f"owner {self.owner!r} must name {{owner}} once (and no other brace) with an "
                "owner column, and have no brace without one"
            )

    @property
    def name(self) -> str:
        """``table.column``, as in messages and reports."""
        return f"{inspect(self.column.class_).local_table.description}.{self.column.key}"

    def context_for(self, row: object) -> str:
        """The context that binds a value to the row whose primary key is ``row``."""
        return self.context.format(row=row)

    def owner_for(self, owner: object = None) -> str:
        """The owner whose DEK encrypts the value of a row whose ``owner_column`` holds
        ``owner`` (ignored, and best left out, when the column has a fixed owner).

        Raises:
            ValueError: the column has an owner column and ``owner`` is ``None``.
        """
        if self.owner_column is None:
            return self.owner
        if owner is None:
            raise ValueError(f"{self.name}: the owner column's value is needed")
        return self.owner.format(owner=owner)


def _names_once(template: str, placeholder: str) -> bool:
    """True when ``placeholder`` is the one pair of braces in ``template``, so formatting it
    and concatenating the text around it give the same string (rotation concatenates)."""
    head, found, tail = template.partition(placeholder)
    return bool(found) and _no_brace(head) and _no_brace(tail)


def _no_brace(text: str) -> bool:
    return "{" not in text and "}" not in text
