"""People in the audit trail appear as pseudonyms: ``u_`` + a keyed HMAC-SHA256 of their ``sub``.

The key is derived from ``ECHO_SECRET_KEY`` (never the raw secret), so a pseudonym cannot be
reversed or recomputed by whoever reads the audit table. The pseudonym → user map is the
separate ``audit_pseudonyms`` table; deleting a user's row (:func:`forget_user`) leaves the
chain intact and verifiable while nothing links the pseudonym back to the person.

The map insert is cheap on the hot path: the first time a process sees a pseudonym it adds an
``INSERT ... ON CONFLICT DO NOTHING`` to the caller's transaction; once that transaction has
committed the pseudonym is remembered (in a bounded in-process set) and later events add
nothing. A rolled-back transaction forgets the pending pseudonyms, so the next event retries.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import Table, delete, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction

from echo_identity.audit.models import AuditPseudonym
from echo_identity.crypto.digests import derive_key
from echo_identity.db import utcnow

PREFIX = "u_"
TYPED_PREFIX = "n_"
DIGEST_HEX = 32  # 128 bits: collisions are out of reach for any user count
MAX_REMEMBERED = 100_000  # bound on the in-process set of pseudonyms known to be mapped
_PENDING = "echo.audit.pending_pseudonyms"
_OWNER = "echo.audit.pseudonyms"
_TABLE: Table = AuditPseudonym.__table__  # type: ignore[assignment]
_INSERTS = {
    "sqlite": sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["pseudonym"]),
    "postgresql": postgresql.insert(_TABLE).on_conflict_do_nothing(index_elements=["pseudonym"]),
}


class PseudonymsNotConfiguredError(RuntimeError):
    """:func:`configure` was not called in this process before a user was recorded."""


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
        digest = hmac.new(self._key, sub.encode(), hashlib.sha256).hexdigest()
        return PREFIX + digest[:DIGEST_HEX]

    def of_typed_name(self, name: str) -> str:
        """A keyed digest of a sign-in name that matches no account (``n_`` + hex): failed
        attempts on one typed name can be grouped without the name, which may be a mistyped
        password, ever being stored. Never mapped back."""
        message = b"typed-name\x00" + name.casefold().encode()
        return TYPED_PREFIX + hmac.new(self._key, message, hashlib.sha256).hexdigest()[:DIGEST_HEX]

    def mapped(self, session: Session, sub: str) -> str:
        """The pseudonym of ``sub``, its map row added to ``session``'s transaction unless this
        process already saw it committed (no statement at all in that case)."""
        pseudonym = self.of(sub)
        if pseudonym in self._mapped:
            return pseudonym
        pending: set[str] = session.info.setdefault(_PENDING, set())
        if pseudonym not in pending:
            session.execute(
                _INSERTS[session.get_bind().dialect.name],
                {"pseudonym": pseudonym, "user_sub": sub, "created_at": utcnow()},
            )
            pending.add(pseudonym)
            session.info[_OWNER] = self
        return pseudonym

    def forget(self, session: Session, sub: str) -> str:
        """Delete the map row of ``sub`` (flushed; the caller commits); returns the pseudonym."""
        pseudonym = self.of(sub)
        self._mapped.discard(pseudonym)
        pending: set[str] = session.info.get(_PENDING, set())
        pending.discard(pseudonym)
        session.execute(delete(AuditPseudonym).where(AuditPseudonym.pseudonym == pseudonym))
        return pseudonym

    def _remember(self, pseudonyms: set[str]) -> None:
        if len(self._mapped) + len(pseudonyms) > MAX_REMEMBERED:
            self._mapped.clear()  # cheap bound: a forgotten one costs one no-op INSERT later
        self._mapped.update(pseudonyms)


@event.listens_for(Session, "after_commit")
def _remember_committed(session: Session) -> None:
    pending: set[str] | None = session.info.pop(_PENDING, None)
    owner: Pseudonyms | None = session.info.pop(_OWNER, None)
    if pending and owner is not None:
        owner._remember(pending)


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


_current: Pseudonyms | None = None
_current_secret: bytes | None = None


def configure(secret_key: bytes) -> Pseudonyms:
    """Key this process's pseudonyms with ``ECHO_SECRET_KEY`` (app factory and worker call this;
    calling again with the same secret keeps the in-process memory)."""
    global _current, _current_secret
    if _current is None or _current_secret != secret_key:
        _current, _current_secret = Pseudonyms.from_secret(secret_key), secret_key
    return _current


def current() -> Pseudonyms:
    """This process's :class:`Pseudonyms`; raises :class:`PseudonymsNotConfiguredError`."""
    if _current is None:
        raise PseudonymsNotConfiguredError(
            "audit pseudonyms are not configured: call audit.pseudonyms.configure(secret_key)"
        )
    return _current
