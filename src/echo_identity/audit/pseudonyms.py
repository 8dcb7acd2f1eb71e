"""People in the audit trail appear as pseudonyms: ``u_`` + a keyed HMAC-SHA256 of their ``sub``.

The key is derived from ``ECHO_SECRET_KEY`` (never the raw secret), so a pseudonym cannot be
reversed or recomputed by whoever reads the audit table. The pseudonym → user map is the
separate ``audit_pseudonyms`` table; deleting a user's row (:func:`forget_user`) leaves the
chain intact and verifiable while nothing links the pseudonym back to the person.

The map insert is cheap on the hot path: the first time a process sees a pseudonym it adds an
``INSERT ... SELECT ... FROM users WHERE users.sub = :sub ON CONFLICT DO NOTHING`` to the
caller's transaction; once that transaction has committed the pseudonym is remembered (in a
bounded in-process set) and later events add nothing. A rolled-back transaction forgets the
pending pseudonyms, so the next event retries.

Only people get a map row: the ``SELECT`` from ``users`` makes the insert a no-op for a value
that is no user's ``sub`` (a random path segment an unauthenticated caller sent, say), so a
caller cannot grow the map, however many such values reach :func:`record`
(docs/audit.md#bounded-writes). Such a pseudonym is never remembered either; when the insert
added nothing, one ``SELECT`` tells "mapped by another process" (remembered) from "no user".
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from sqlalchemy import Table, bindparam, column, delete, event, select, table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, SessionTransaction

from echo_identity.audit.models import AuditPseudonym
from echo_identity.crypto.digests import derive_key
from echo_identity.db import UTCDateTime, utcnow

PREFIX = "u_"
TYPED_PREFIX = "n_"
DIGEST_HEX = 32  # 128 bits: collisions are out of reach for any user count
MAX_REMEMBERED = 100_000  # bound on the in-process set of pseudonyms known to be mapped
_PENDING = "echo.audit.pending_pseudonyms"
_OWNER = "echo.audit.pseudonyms"
_TABLE: Table = AuditPseudonym.__table__  # type: ignore[assignment]
# A lightweight view of accounts' table: the audit core does not import the accounts domain.
_USERS = table("users", column("sub"))
_MAX_SUB = 255  # the map's user_sub column; a longer value is no user's sub
# One row (the map entry) when ``:user_sub`` is a user's sub, none otherwise. The WHERE also
# keeps SQLite from reading ON CONFLICT as a join constraint.
_MAPPED_USER = select(
    bindparam("pseudonym", type_=_TABLE.c.pseudonym.type),
    _USERS.c.sub,
    bindparam("created_at", type_=UTCDateTime()),
).where(_USERS.c.sub == bindparam("user_sub", type_=_TABLE.c.user_sub.type))
_INSERTS = {
    name: dialect.insert(_TABLE)
    .from_select(["pseudonym", "user_sub", "created_at"], _MAPPED_USER)
    .on_conflict_do_nothing(index_elements=["pseudonym"])
    .returning(_TABLE.c.pseudonym)  # a row back only when one was inserted
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
_IS_MAPPED = select(_TABLE.c.pseudonym).where(_TABLE.c.pseudonym == bindparam("pseudonym"))


class Pseudonyms:
    """Computes pseudonyms with one key and remembers which ones are already mapped."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._mapped: set[str] = set()

    @classmethod
    def from_secret(cls, secret_key: bytes) -> Pseudonyms:
        """Pseudonyms keyed with a subkey of ``ECHO_SECRET_KEY`` dedicated to the audit trail."""
        return cls(derive_key(secret_key, "audit-pseudonym"))

    def of(self, sub: str) -> str:
        """The pseudonym of the user ``sub`` (deterministic for one secret key)."""
        # surrogatepass: a lone surrogate (never a real sub) still has a pseudonym, not a crash
        message = sub.encode("utf-8", "surrogatepass")
        digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return PREFIX + digest[:DIGEST_HEX]

    def of_typed_name(self, name: str) -> str:
        """A keyed digest of a sign-in name that matches no account (``n_`` + hex): failed
        attempts on one typed name can be grouped without the name, which may be a mistyped
        password, ever being stored. Never mapped back."""
        message = b"typed-name\x00" + name.casefold().encode("utf-8", "surrogatepass")
        return TYPED_PREFIX + hmac.new(self._key, message, hashlib.sha256).hexdigest()[:DIGEST_HEX]

    def mapped(self, session: Session, sub: str) -> str:
        """The pseudonym of ``sub``, its map row added to ``session``'s transaction when ``sub``
        is a user's and this process has not already seen that row committed (no statement at
        all in that case). For a ``sub`` that is no user's, nothing is written."""
        pseudonym = self.of(sub)
        if pseudonym in self._mapped:
            return pseudonym
        pending: set[str] = session.info.setdefault(_PENDING, set())
        if pseudonym in pending or not _storable(sub):
            return pseudonym
        session.flush()  # a user added earlier in this transaction must be visible to the SELECT
        if _map(session, session.get_bind().dialect.name, pseudonym, sub):
            pending.add(pseudonym)  # remembered once this transaction commits
            session.info[_OWNER] = self
        return pseudonym

    def map_on(self, connection: Connection, subs: Iterable[str]) -> set[str]:
        """Add the missing map rows of the users ``subs`` on ``connection``'s transaction (the
        group-commit writer's); returns the pseudonyms to :meth:`remember` once it commits."""
        mapped: set[str] = set()
        for sub in subs:
            pseudonym = self.of(sub)
            if pseudonym in self._mapped or not _storable(sub):
                continue
            if _map(connection, connection.dialect.name, pseudonym, sub):
                mapped.add(pseudonym)
        return mapped

    def forget(self, session: Session, sub: str) -> str:
        """Delete the map row of ``sub`` (flushed; the caller commits); returns the pseudonym."""
        pseudonym = self.of(sub)
        self._mapped.discard(pseudonym)
        pending: set[str] = session.info.get(_PENDING, set())
        pending.discard(pseudonym)
        session.execute(delete(AuditPseudonym).where(AuditPseudonym.pseudonym == pseudonym))
        return pseudonym

    def remember(self, pseudonyms: set[str]) -> None:
        """Note ``pseudonyms`` as mapped by a committed transaction."""
        if len(self._mapped) + len(pseudonyms) > MAX_REMEMBERED:
            self._mapped.clear()  # cheap bound: a forgotten one costs one no-op INSERT later
        self._mapped.update(pseudonyms)


def _map(executor: Session | Connection, dialect: str, pseudonym: str, sub: str) -> bool:
    """Insert the map row of ``sub`` if it is a user's; True when the row now exists (inserted
    now, or already there: another process mapped it), False when ``sub`` is no user's."""
    inserted = executor.execute(
        _INSERTS[dialect], {"pseudonym": pseudonym, "user_sub": sub, "created_at": utcnow()}
    )
    if inserted.first() is not None:
        return True
    return executor.execute(_IS_MAPPED, {"pseudonym": pseudonym}).first() is not None


def _storable(sub: str) -> bool:
    """False for what no stored ``sub`` can be (too long, NUL, not encodable): such a value is
    not even sent to the database, where PostgreSQL would refuse it with an error."""
    if len(sub) > _MAX_SUB or "\x00" in sub:
        return False
    try:
        sub.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


@event.listens_for(Session, "after_commit")
def _remember_committed(session: Session) -> None:
    pending: set[str] | None = session.info.pop(_PENDING, None)
    owner: Pseudonyms | None = session.info.pop(_OWNER, None)
    if pending and owner is not None:
        owner.remember(pending)


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending_on_rollback(session: Session, _previous: SessionTransaction) -> None:
    # Any rollback (a savepoint's too) may have undone a map insert: retry it next time.
    _drop_pending(session)


@event.listens_for(Session, "after_transaction_end")
def _drop_pending_on_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction ended without a commit
        _drop_pending(session)


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_OWNER, None)
