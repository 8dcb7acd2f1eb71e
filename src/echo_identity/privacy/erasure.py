"""Erasure of a user (GDPR Art. 17) by crypto-shredding, in five resumable steps.

:meth:`UserErasure.erase` runs, in this order, each step that its :class:`Erasure` record
does not mark done, and marks it done in the same commit as its effect:

1. ``upstream_revoked_at``: every vault connection is revoked at its provider (RFC 7009,
   through the vault's ``disconnect``: revoke, delete the tokens, withdraw the consent,
   ``vault.connection.revoked``). Best effort: a provider that refuses or fails is recorded
   (``privacy.erasure.upstream_failed``) and the erasure goes on; step 3 makes the tokens left
   behind unreadable anyway.
2. ``credentials_revoked_at``: the user is disabled; every live access token of the user's
   token families joins the jti deny list (it outlives the families deleted in step 4);
   unredeemed codes are deleted, every token family revoked and every browser session ended
   (:func:`~echo_identity.accounts.credentials.revoke_user_credentials`).
3. ``data_keys_destroyed_at``: the user's data keys are destroyed, so every copy of their
   third-party tokens, backups included, is unreadable.
4. ``rows_deleted_at``: every row that references the user (:data:`USER_ROWS`, then the
   ``users`` row itself) is deleted.
5. ``pseudonym_forgotten_at``: the pseudonym map row is deleted (``privacy.pseudonym.forgotten``):
   the audit chain keeps verifying, its events now name nobody.

Then ``privacy.user.erased`` is recorded, naming only the pseudonym, with ``completed_at``.

Every step is idempotent, and the record (migration 0010) keeps the former ``users.id`` and,
until the erasure completes, the ``sub``, so an erasure interrupted anywhere is finished by
running it again with the user's ``sub``, also after step 4 deleted the user (the username is
gone then). The record is found by the pseudonym of the ``sub`` given; once complete it no
longer holds the ``sub``, so nothing stored leads from the pseudonym back to the person.

Commits: unlike a request's single unit of work, each step commits on its own (a step that is
done must stay done whatever happens to the next); step 1 commits once per connection, after
its provider answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, literal, select
from sqlalchemy.orm import Session

from echo_identity.accounts.credentials import revoke_user_credentials
from echo_identity.accounts.models import BrowserSession, User
from echo_identity.accounts.service import Accounts
from echo_identity.accounts.sessions import SessionStore
from echo_identity.audit.events import EventType, Severity
from echo_identity.audit.service import AuditTrail
from echo_identity.crypto.aead import DecryptionError
from echo_identity.db import utcnow
from echo_identity.idp.models import (
    AuthorizationCode,
    Consent,
    IssuedAccessToken,
    RefreshToken,
    RevokedAccessToken,
    TokenFamily,
)
from echo_identity.keys.keyring import USER_OWNER, KeyringFactory
from echo_identity.privacy.errors import UnknownSubjectError
from echo_identity.privacy.export import find_user
from echo_identity.privacy.models import Erasure
from echo_identity.vault.errors import ConnectionNotFoundError, UpstreamError
from echo_identity.vault.models import Connection, ConnectionConsent, Provider
from echo_identity.vault.runtime import VaultRuntime
from echo_identity.web.context import NO_REQUEST, RequestContext

# Every table whose rows reference a user through ``user_id`` (deleted in step 4, children
# first; the rows of a user's token families go with them). A new table referencing
# ``users.id`` must be listed here: tests/unit/privacy/test_erasure_tables.py fails until it is.
USER_ROWS: tuple[Any, ...] = (
    AuthorizationCode,
    Consent,
    Connection,
    ConnectionConsent,
    BrowserSession,
)
FAMILY_ROWS: tuple[Any, ...] = (IssuedAccessToken, RefreshToken)  # by their token family


@dataclass(frozen=True)
class ErasureOutcome:
    """What :meth:`UserErasure.erase` did: the record as it ends, and ``already`` when the
    erasure had finished before this call (nothing was done)."""

    sub: str
    pseudonym: str
    upstream_failures: int
    already: bool
    steps: dict[str, datetime | None]

    def as_dict(self) -> dict[str, object]:
        return {
            "sub": self.sub,
            "pseudonym": self.pseudonym,
            "erased": True,
            "already_erased": self.already,
            "upstream_failures": self.upstream_failures,
            "steps": {
                name: when.isoformat() if when else None for name, when in self.steps.items()
            },
        }


@dataclass(frozen=True)
class Erasures:
    """The erasure's collaborators, taken from the wiring point's ``Services`` by the caller
    (the CLI, or the view through ``web.context.service``)."""

    vault: VaultRuntime
    accounts: Accounts
    sessions: SessionStore
    keyrings: KeyringFactory
    audit: AuditTrail
    clock: Callable[[], datetime] = utcnow

    def service(self, session: Session) -> UserErasure:
        return UserErasure(session, self)


class UserErasure:
    """Erasures on one database session, which this commits step by step (see the module)."""

    def __init__(self, session: Session, collaborators: Erasures) -> None:
        self._session = session
        self._with = collaborators

    def pending(self, who: str) -> tuple[User | None, Erasure | None]:
        """The user ``who`` (sub or username) and their erasure record, either ``None`` when
        absent. Raises :class:`UnknownSubjectError` when both are."""
        user = find_user(self._session, who)
        pseudonym = self._with.audit.pseudonyms.of(user.sub if user is not None else who)
        record = self._session.scalar(select(Erasure).where(Erasure.pseudonym == pseudonym))
        if user is None and record is None:
            raise UnknownSubjectError()
        return user, record

    def erase(
        self, who: str, *, requested_by: str, context: RequestContext = NO_REQUEST
    ) -> ErasureOutcome:
        """Erase the user ``who`` (sub or username; a half-erased user: the sub), or finish
        their unfinished erasure; ``requested_by`` is ``"user"`` or ``"cli"``.

        Raises :class:`UnknownSubjectError`, and whatever the database, the session store or
        the key store raises (the steps done so far stay done: run it again).
        """
        user, record = self.pending(who)
        sub = user.sub if user is not None else who
        if record is not None and record.completed_at is not None:
            return _outcome(record, sub, already=True)
        if record is None:
            if user is None:  # pending() raised already; this narrows the type
                raise UnknownSubjectError()
            record = self._start(user, requested_by, context)
        if record.upstream_revoked_at is None:
            self._revoke_upstream(record, user, context)
            self._done(record, "upstream_revoked_at")
        if record.credentials_revoked_at is None:
            self._revoke_credentials(record, user, context)
            self._done(record, "credentials_revoked_at")
        if record.data_keys_destroyed_at is None:
            self._destroy_data_keys(record)
            self._done(record, "data_keys_destroyed_at")
        if record.rows_deleted_at is None:
            self._delete_rows(record)
            self._done(record, "rows_deleted_at")
        if record.pseudonym_forgotten_at is None:
            self._forget_pseudonym(record, context)
            self._done(record, "pseudonym_forgotten_at")
        self._finish(record, context)
        return _outcome(record, sub, already=False)

    def _actor(self, record: Erasure) -> str | None:
        """The events' actor: ``cli`` for an operator's erasure; none for the user's own (the
        subject is the actor then)."""
        return "cli" if record.requested_by == "cli" else None

    def _done(self, record: Erasure, step: str) -> None:
        setattr(record, step, self._with.clock())
        self._session.commit()

    def _start(self, user: User, requested_by: str, context: RequestContext) -> Erasure:
        record = Erasure(
            sub=user.sub,
            pseudonym=self._with.audit.pseudonyms.of(user.sub),
            user_id=user.id,
            requested_by=requested_by,
            started_at=self._with.clock(),
            upstream_failures=0,
        )
        self._session.add(record)
        self._with.audit.record(
            self._session,
            EventType.ERASURE_STARTED,
            context=context,
            severity=Severity.WARNING,
            actor=self._actor(record),
            user=user.sub,
        )
        self._session.commit()
        return record

    def _revoke_upstream(self, record: Erasure, user: User | None, context: RequestContext) -> None:
        """Step 1: each connection revoked at its provider and deleted, one commit each; a
        provider failure is recorded and counted instead."""
        if user is None:  # the user row is gone: nothing is left to revoke
            return
        vault = self._with.vault.service(self._session)
        connected = self._session.scalars(
            select(Provider)
            .join(Connection, Connection.provider_id == Provider.id)
            .where(Connection.user_id == record.user_id)
            .order_by(Provider.name)
        ).all()
        for provider in connected:
            try:
                vault.disconnect(user, provider, context=context)
            except ConnectionNotFoundError:
                continue  # disconnected meanwhile
            except (UpstreamError, DecryptionError) as exc:
                self._session.rollback()
                record.upstream_failures += 1
                self._with.audit.record(
                    self._session,
                    EventType.ERASURE_UPSTREAM_FAILED,
                    context=context,
                    outcome="failure",
                    severity=Severity.WARNING,
                    user=_sub(record),
                    details={"provider": provider.name, "error": _reason(exc)},
                )
            self._session.commit()

    def _revoke_credentials(
        self, record: Erasure, user: User | None, context: RequestContext
    ) -> None:
        """Step 2: disable the user, deny-list their live access tokens, end every code,
        token family and browser session."""
        if user is None:
            self._with.sessions.delete_for_user(record.user_id)
            return
        user.disabled = True
        now = self._with.clock()
        families = select(TokenFamily.id).where(TokenFamily.user_id == record.user_id)
        denied = select(RevokedAccessToken.jti)
        self._session.execute(
            insert(RevokedAccessToken).from_select(
                ["jti", "expires_at", "revoked_at"],
                select(
                    IssuedAccessToken.jti,
                    IssuedAccessToken.expires_at,
                    literal(now, RevokedAccessToken.revoked_at.type),
                ).where(
                    IssuedAccessToken.family_id.in_(families),
                    IssuedAccessToken.expires_at > now,
                    IssuedAccessToken.jti.not_in(denied),
                ),
            )
        )
        revoke_user_credentials(  # commits, then ends the browser sessions
            self._session,
            self._with.sessions,
            user,
            audit=self._with.audit,
            revokers=self._with.accounts.revokers,
            cause=EventType.ERASURE_SIGNED_OUT,
            context=context,
            actor=self._actor(record),
        )

    def _destroy_data_keys(self, record: Erasure) -> None:
        """Step 3: crypto-shredding."""
        self._with.keyrings(self._session).destroy(USER_OWNER.format(owner=record.user_id))

    def _delete_rows(self, record: Erasure) -> None:
        """Step 4: every row that references the user, then the user."""
        families = select(TokenFamily.id).where(TokenFamily.user_id == record.user_id)
        for model in FAMILY_ROWS:
            self._session.execute(delete(model).where(model.family_id.in_(families)))
        self._session.execute(delete(TokenFamily).where(TokenFamily.user_id == record.user_id))
        for model in USER_ROWS:
            self._session.execute(delete(model).where(model.user_id == record.user_id))
        self._session.execute(delete(User).where(User.id == record.user_id))
        self._session.commit()
        self._with.sessions.delete_for_user(record.user_id)  # Redis' (the database's: gone)

    def _forget_pseudonym(self, record: Erasure, context: RequestContext) -> None:
        """Step 5: the pseudonym → user map row."""
        self._with.audit.forget_user(self._session, _sub(record), context=context)

    def _finish(self, record: Erasure, context: RequestContext) -> None:
        """``privacy.user.erased``, naming only the pseudonym, and the record completed: it
        keeps the pseudonym, no longer the ``sub``."""
        record.completed_at = self._with.clock()
        record.sub = None
        self._with.audit.record(
            self._session,
            EventType.USER_ERASED,
            context=context,
            severity=Severity.WARNING,
            actor=self._actor(record),
            subject=record.pseudonym,
            details={
                "requested_by": record.requested_by,
                "upstream_failures": record.upstream_failures,
            },
        )
        self._session.commit()


def _reason(exc: Exception) -> str:
    return exc.code if isinstance(exc, UpstreamError) else "undecryptable_token"


def _sub(record: Erasure) -> str:
    """The ``sub`` of an erasure that has not completed (it keeps it until then)."""
    if record.sub is None:
        raise RuntimeError(f"erasure {record.pseudonym} has completed; it holds no sub")
    return record.sub


def _outcome(record: Erasure, sub: str, *, already: bool) -> ErasureOutcome:
    return ErasureOutcome(
        sub=sub,
        pseudonym=record.pseudonym,
        upstream_failures=record.upstream_failures,
        already=already,
        steps={
            "upstream_revoked": record.upstream_revoked_at,
            "credentials_revoked": record.credentials_revoked_at,
            "data_keys_destroyed": record.data_keys_destroyed_at,
            "rows_deleted": record.rows_deleted_at,
            "pseudonym_forgotten": record.pseudonym_forgotten_at,
            "completed": record.completed_at,
        },
    )
