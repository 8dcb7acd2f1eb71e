"""JWS signing keys: generation, encrypted storage, staged rotation and the published JWKS.

Rotation is staged so that no relying party ever sees a token signed by a key it cannot find:

1. ``echo-identity keys rotate`` creates a key per algorithm that is *published* at once and
   *activates* (starts signing) ``ECHO_KEY_PUBLISH_AHEAD`` seconds later;
2. the previous key signs until then, and stays published until every token it signed has
   expired (``retention``: the longest token lifetime plus clock leeway);
3. every worker process reloads the key table at most every ``RELOAD_SECONDS`` (the publish-ahead
   minimum is larger), so no restart is needed.

The public keys are answered from memory: while the database is unreachable, ``/jwks`` and token
verification keep using the last key set read (relying parties must never lose our keys because
of a database outage); the next reload after it is back picks up any rotation.

:class:`KeySchedule` is the pure rule; :class:`SigningKeyStore` the database side;
:class:`SigningKeys` the per-process cache the token code uses.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, OKPKey, RSAKey
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from echo_identity.clock import SYSTEM_CLOCK, Clock
from echo_identity.crypto.jwk import ALGORITHMS, JWTKey, generate_key
from echo_identity.db import Database, utcnow
from echo_identity.idp.models import SigningKey
from echo_identity.keys.columns import EncryptedColumn
from echo_identity.keys.keyring import SYSTEM_OWNER, Keyring, KeyringFactory
from echo_identity.logs import get_logger

RELOAD_SECONDS = 5.0
log = get_logger("echo_identity.idp.keys")

# Declared once: the store below and key rotation (schema.ENCRYPTED_COLUMNS) both read it.
PRIVATE_KEY = EncryptedColumn(
    SigningKey.private_key_ciphertext,
    context="signing_key:{row}:private_key",
    owner=SYSTEM_OWNER,
)


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    alg: str
    created_at: datetime
    activates_at: datetime


@dataclass(frozen=True)
class KeySchedule:
    """Which key signs and which keys are published at a given time (pure)."""

    publish_ahead: timedelta
    retention: timedelta

    def signing(self, keys: Sequence[KeyInfo], alg: str, now: datetime) -> KeyInfo | None:
        """The newest key of ``alg`` that has activated, or ``None``."""
        active = [k for k in keys if k.alg == alg and k.activates_at <= now]
        return max(active, key=lambda k: (k.activates_at, k.created_at), default=None)

    def published(self, keys: Sequence[KeyInfo], now: datetime) -> list[KeyInfo]:
        """Pending keys, signing keys, and superseded keys whose tokens may still be valid."""
        result = []
        for alg in {k.alg for k in keys}:
            ordered = sorted(
                (k for k in keys if k.alg == alg), key=lambda k: (k.activates_at, k.created_at)
            )
            for index, key in enumerate(ordered):
                successors = [k for k in ordered[index + 1 :] if k.activates_at <= now]
                if not successors:
                    result.append(key)  # pending or currently signing
                    continue
                superseded_at = successors[0].activates_at
                if superseded_at + self.retention > now:
                    result.append(key)
        return sorted(result, key=lambda k: (k.alg, k.activates_at))


def _info(row: SigningKey) -> KeyInfo:
    return KeyInfo(row.kid, row.alg, row.created_at, row.activates_at)


class SigningKeyStore:
    """Signing keys in the database; private halves encrypted with the system DEK."""

    def __init__(self, session: Session, keyring: Keyring, schedule: KeySchedule) -> None:
        self._session = session
        self._keyring = keyring
        self._schedule = schedule

    def rows(self) -> list[SigningKey]:
        return list(self._session.scalars(select(SigningKey).order_by(SigningKey.created_at)))

    def create(self, alg: str, activates_at: datetime) -> SigningKey:
        """Generate, encrypt and add a key (flushed; the caller commits)."""
        key = generate_key(alg)
        kid = key.thumbprint()
        public = {**key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"}
        row = SigningKey(
            kid=kid,
            alg=alg,
            public_jwk={k: str(v) for k, v in public.items()},
            private_key_ciphertext=self._keyring.encrypt(
                PRIVATE_KEY.owner_for(), key.as_pem(private=True), PRIVATE_KEY.context_for(kid)
            ),
            created_at=utcnow(),
            activates_at=activates_at,
        )
        self._session.add(row)
        self._session.flush()
        return row

    def ensure(self) -> list[SigningKey]:
        """Create an immediately active key for every algorithm that has none (flushed; the
        caller commits)."""
        present = {row.alg for row in self.rows()}
        now = utcnow()
        return [self.create(alg, now) for alg in ALGORITHMS if alg not in present]

    def rotate(self, algorithms: Sequence[str] = ALGORITHMS) -> list[SigningKey]:
        """Stage a new key per algorithm and drop keys no longer published (flushed; the caller
        commits)."""
        now = utcnow()
        created = [self.create(alg, now + self._schedule.publish_ahead) for alg in algorithms]
        published = {k.kid for k in self._schedule.published([_info(r) for r in self.rows()], now)}
        for row in self.rows():
            if row.kid not in published:
                self._session.delete(row)
        self._session.flush()
        return created

    def replace_now(
        self, algorithms: Sequence[str] = ALGORITHMS
    ) -> tuple[list[SigningKey], list[KeyInfo]]:
        """Suspected compromise: create a key per algorithm that signs at once and delete every
        other key of those algorithms, private half included (flushed; the caller commits).
        Returns the keys created and what the deleted ones were.

        Unlike :meth:`rotate`, nothing is staged: a retired key leaves ``/jwks`` and every
        token it signed stops verifying once each process reloads its keys (within
        ``RELOAD_SECONDS``), and relying parties that cached the old JWKS must refetch it.
        """
        now = utcnow()
        retired = []
        for row in self.rows():
            if row.alg in algorithms:
                retired.append(_info(row))
                self._session.delete(row)
        self._session.flush()
        created = [self.create(alg, now) for alg in algorithms]
        return created, retired

    def load_private(self, row: SigningKey) -> JWTKey:
        """Decrypt a private key; raises ``DecryptionError`` when the ciphertext is not ours."""
        pem = self._keyring.decrypt(row.private_key_ciphertext, PRIVATE_KEY.context_for(row.kid))
        key: JWTKey = _KEY_CLASSES[row.alg].import_key(pem, {"kid": row.kid, "alg": row.alg})
        return key


_KEY_CLASSES: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey]] = {
    "RS256": RSAKey,
    "ES256": ECKey,
    "EdDSA": OKPKey,
}


def ensure_signing_keys(
    database: Database, keyrings: KeyringFactory, schedule: KeySchedule
) -> list[SigningKey]:
    """What ``serve`` does before it binds: one active key per algorithm that has none,
    committed. Returns the keys it created."""
    with database.transaction() as session:
        return SigningKeyStore(session, keyrings(session), schedule).ensure()


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    key: JWTKey


@dataclass(frozen=True)
class _KeySet:
    """One consistent reading of the key table (swapped whole, so readers never mix two)."""

    infos: tuple[KeyInfo, ...] = ()
    keys: Mapping[str, LoadedKey] = field(default_factory=dict)
    public: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


class SigningKeys:
    """Per-process view of the signing keys, reloaded from the database every few seconds.

    Thread-safe; private keys are decrypted once per process and kept in memory only. One thread
    reloads at a time while the others keep using the keys already loaded, and a reload that
    fails because the database does not answer keeps them too (retried ``RELOAD_SECONDS``
    later), so a slow or unreachable database never stops ``/jwks`` once keys were loaded.
    """

    def __init__(
        self,
        database: Database,
        keyring_for: KeyringFactory,
        schedule: KeySchedule,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._database = database
        self._keyring_for = keyring_for
        self.schedule = schedule
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded_at = float("-inf")
        self._current: _KeySet | None = None

    def _stale(self) -> bool:
        return self._clock.monotonic() - self._loaded_at >= RELOAD_SECONDS

    def _refresh(self, force: bool = False) -> _KeySet:
        """The current key set, reloaded first when it is stale (or ``force``).

        Raises the database's error only while no key set was ever loaded (nothing to serve).
        """
        current = self._current
        if current is not None and not force and not self._stale():
            return current
        # Once keys are loaded, a reload in progress elsewhere is no reason to wait.
        if not self._lock.acquire(blocking=force or current is None):
            assert current is not None
            return current
        try:
            if self._current is not None and not force and not self._stale():
                return self._current
            try:
                self._current = self._load(self._current)
            except (DBAPIError, PoolTimeoutError) as exc:
                if self._current is None:
                    raise
                log.warning("signing_keys_reload_failed", error_type=type(exc).__name__)
            self._loaded_at = self._clock.monotonic()
            return self._current
        finally:
            self._lock.release()

    def _load(self, previous: _KeySet | None) -> _KeySet:
        """Read the key table, decrypting only private keys not loaded before."""
        known = previous.keys if previous is not None else {}
        with self._database.read_session() as session:
            store = SigningKeyStore(session, self._keyring_for(session), self.schedule)
            rows = store.rows()
            keys = {
                row.kid: known.get(row.kid) or LoadedKey(row.kid, row.alg, store.load_private(row))
                for row in rows
            }
            return _KeySet(
                infos=tuple(_info(row) for row in rows),
                keys=keys,
                public={row.kid: dict(row.public_jwk) for row in rows},
            )

    def signing_key(self, alg: str) -> LoadedKey:
        """The key that signs ``alg`` now; raises ``LookupError`` when there is none."""
        current = self._refresh()
        info = self.schedule.signing(current.infos, alg, self._clock.now())
        if info is None:
            current = self._refresh(force=True)
            info = self.schedule.signing(current.infos, alg, self._clock.now())
        if info is None:
            raise LookupError(f"no active {alg} signing key; run: echo-identity keys rotate")
        return current.keys[info.kid]

    def verification_key(self, kid: str) -> LoadedKey | None:
        """The published key ``kid`` (reloading once for a kid not seen yet), or ``None``."""
        current = self._refresh()
        if kid not in current.public:
            current = self._refresh(force=True)
        published = {k.kid for k in self.schedule.published(current.infos, self._clock.now())}
        return current.keys.get(kid) if kid in published else None

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set: pending, signing and still-needed superseded keys."""
        current = self._refresh()
        published = self.schedule.published(current.infos, self._clock.now())
        return {"keys": [dict(current.public[k.kid]) for k in published]}
