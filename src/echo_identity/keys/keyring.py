"""Envelope encryption with one data-encryption key (DEK) per owner, stored wrapped by a KEK.

An owner is :data:`SYSTEM_OWNER` (``system``) or a user (:data:`USER_OWNER`, ``user:<id>``).
Each owner has at most one *current* DEK, which encrypts; retired DEKs still decrypt.
Ciphertexts use :mod:`echo_identity.crypto.aead` with the DEK id in the header, so decrypting
needs only the ciphertext and the context it was bound to.

- KEK rotation (:meth:`Keyring.rewrap_all`) re-wraps DEK rows; ciphertexts are untouched.
- DEK rotation (:meth:`Keyring.rotate`) retires the current DEK; old ciphertexts keep working
  until their rows are re-encrypted. Bulk re-encryption takes :meth:`Keyring.encryptors` (the
  current DEKs of many owners, looked up and created together) and :meth:`Keyring.preload`
  (many DEKs unwrapped in one query) instead of a lookup per ciphertext.
- Crypto-shredding (:meth:`Keyring.destroy`) deletes an owner's DEKs, which makes every copy of
  that owner's ciphertexts, backups included, permanently unreadable.

The Keyring never commits: the caller's unit of work does. Errors::

    DecryptionError                    (crypto.aead) wrong context, tampering, bad header
    ├── UnknownKekError                (crypto.kek) the DEK is wrapped by a KEK no longer configured
    └── UnknownDataKeyError            the DEK named by the ciphertext does not exist (destroyed)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from echo_identity.cache import FreshFor
from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError
from echo_identity.crypto.kek import KekProvider
from echo_identity.db import utcnow
from echo_identity.keys.models import DataKey

SYSTEM_OWNER = "system"
"""The owner of secrets that belong to no user: signing keys, provider client secrets."""
USER_OWNER = "user:{owner}"
"""The owner of a user's secrets, formatted with the user's id (``owner``)."""
MAX_OWNER_LENGTH = 64
REWRAP_BATCH_SIZE = 500
_LOOKUP_CHUNK = 500  # ids per IN (...) list, well under every driver's parameter limit


class UnknownDataKeyError(DecryptionError):
    """The ciphertext names a DEK that does not exist: its owner was crypto-shredded, or the
    ciphertext belongs to another deployment."""

    code = "unknown_data_key"

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"data key {key_id!r} does not exist (destroyed, or never created here)")


class Encryptor:
    """Encrypts for one owner under the DEK that was current when :meth:`Keyring.encryptor` or
    :meth:`Keyring.encryptors` looked it up. It holds the unwrapped DEK, so keep it no longer
    than the unit of work that made it; it never re-checks that the DEK is still current.
    ``new`` says whether that lookup created the DEK."""

    __slots__ = ("_dek", "key_id", "new")

    def __init__(self, key_id: str, dek: bytes, *, new: bool = False) -> None:
        self.key_id = key_id
        self.new = new
        self._dek = dek

    def __repr__(self) -> str:
        return f"Encryptor(key_id={self.key_id!r}, new={self.new!r})"  # never the DEK

    def encrypt(self, plaintext: bytes, context: str) -> bytes:
        """``plaintext`` encrypted under this DEK and bound to ``context`` (see
        :meth:`Keyring.encrypt`)."""
        return aead.encrypt(self._dek, self.key_id, plaintext, context)


class Keyring:
    """Encrypts and decrypts owners' secrets with their DEKs, kept in ``data_keys``.

    Unwrapped DEKs are cached for the life of the instance, so create one Keyring per unit of
    work (like its session) rather than one per process. ``shared``, the keyring factory's
    process-wide cache, keeps a DEK that :meth:`decrypt` unwrapped for at most a second for
    the keyrings of later units of work: a hot read (the vault's token hand-out) then neither
    reads ``data_keys`` nor asks the KEK provider (a KMS call) each time. A DEK destroyed in
    another process is therefore still usable here for up to a second; in this process
    :meth:`destroy` forgets it at once.
    """

    def __init__(
        self, session: Session, keks: KekProvider, shared: FreshFor[bytes] | None = None
    ) -> None:
        self._session = session
        self._keks = keks
        self._shared = shared
        # DEK id -> unwrapped DEK. Never logged; evicted by destroy().
        self._deks: dict[str, bytes] = {}

    def encrypt(self, owner: str, plaintext: bytes, context: str) -> bytes:
        """``plaintext`` encrypted under ``owner``'s current DEK and bound to ``context``
        (the row and field it will be stored in, e.g. ``connection:42:refresh_token``).

        Creates and flushes the owner's first DEK if it has none.

        Raises:
            ValueError: ``owner`` is empty or longer than 64 characters.
            DecryptionError: the current DEK cannot be unwrapped (for example
                :class:`~echo_identity.crypto.kek.UnknownKekError`).
        """
        return self.encryptor(owner).encrypt(plaintext, context)

    def encryptor(self, owner: str) -> Encryptor:
        """An :class:`Encryptor` for ``owner``'s current DEK, which is looked up once here
        (created and flushed if the owner has none); for encrypting several values in a row.

        Raises:
            ValueError: ``owner`` is empty or longer than 64 characters.
            DecryptionError: the current DEK cannot be unwrapped.
        """
        data_key = self._current(owner) or self._create_or_reread(owner)
        return Encryptor(data_key.id, self._dek(data_key))

    def encryptors(self, owners: Collection[str]) -> dict[str, Encryptor]:
        """An :class:`Encryptor` for each of ``owners``' current DEKs, in one query per 500
        owners. Owners without a current DEK get a new one; all new DEKs are flushed together.
        If a concurrent transaction creates an owner's DEK first (the one-current-DEK index
        refuses ours), its DEK is used.

        Raises:
            ValueError: an owner is empty or longer than 64 characters (nothing is created).
            DecryptionError: a current DEK cannot be unwrapped.
        """
        for owner in owners:
            _check_owner(owner)
        current = self._current_of(owners)
        created: dict[str, DataKey] = {}
        for attempt in range(2):
            missing = sorted(set(owners) - current.keys())
            if not missing:
                break
            try:
                with self._session.begin_nested():
                    for owner in missing:
                        created[owner] = self._create(owner, flush=False)
                    self._session.flush()
            except IntegrityError:
                # A concurrent first encryption won for some owner: use the winners' DEKs.
                for data_key in created.values():
                    self._deks.pop(data_key.id, None)
                created = {}
                if attempt:
                    raise
                current.update(self._current_of(missing))
                continue
            current.update(created)
            break
        return {
            owner: Encryptor(key.id, self._dek(key), new=owner in created)
            for owner, key in current.items()
        }

    def preload(self, key_ids: Collection[str]) -> None:
        """Unwrap and cache the DEKs ``key_ids`` names (retired or not) in one query per 500
        ids, so the :meth:`decrypt` calls that follow need no query. Ids already cached or
        without a DEK are skipped: :meth:`decrypt` raises for those as usual.

        Raises:
            UnknownKekError: a DEK is wrapped by a KEK that is not configured.
            DecryptionError: a wrapped DEK was altered.
        """
        wanted = sorted(set(key_ids) - self._deks.keys())
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[start : start + _LOOKUP_CHUNK]
            for data_key in self._session.scalars(select(DataKey).where(DataKey.id.in_(chunk))):
                self._dek(data_key)

    def _create_or_reread(self, owner: str) -> DataKey:
        """Create the owner's first DEK; if a concurrent transaction won that race (the
        one-current-DEK-per-owner index refused ours), use theirs."""
        try:
            with self._session.begin_nested():
                return self._create(owner)
        except IntegrityError:
            current = self._current(owner)
            if current is None:
                raise
            return current

    def decrypt(self, ciphertext: bytes, context: str) -> bytes:
        """The plaintext of ``ciphertext``, which must have been encrypted for ``context``.

        Works with any DEK, retired or not, of any owner.

        Raises:
            UnknownDataKeyError: the DEK named in the ciphertext does not exist.
            UnknownKekError: the DEK is wrapped by a KEK that is not configured.
            DecryptionError: wrong context, an altered ciphertext or a malformed header.
        """
        key_id = aead.key_id_of(ciphertext)
        dek = self._deks.get(key_id)
        if dek is None:
            shared = self._shared
            dek = shared.get(key_id, self._load) if shared is not None else self._load(key_id)
            if dek is None:
                raise UnknownDataKeyError(key_id)
            self._deks[key_id] = dek
        return aead.decrypt(dek, ciphertext, context)

    def _load(self, key_id: str) -> bytes | None:
        data_key = self._session.get(DataKey, key_id)
        return self._dek(data_key) if data_key is not None else None

    def rotate(self, owner: str) -> DataKey:
        """Retire ``owner``'s current DEK and return a new one, flushed. Ciphertexts under the
        retired DEK still decrypt; new ones use the new DEK.

        Raises:
            ValueError: ``owner`` is empty or longer than 64 characters.
        """
        now = utcnow()
        for data_key in self._session.scalars(
            select(DataKey).where(DataKey.owner == owner, DataKey.retired_at.is_(None))
        ):
            data_key.retired_at = now
        return self._create(owner)

    def rewrap_all(self) -> int:
        """Re-wrap every DEK not wrapped by the primary KEK under the primary KEK (KEK
        rotation), flushing in batches; ciphertexts are untouched. Returns how many were
        re-wrapped. Safe to run again after a failure: it resumes with the remaining DEKs.

        Raises:
            UnknownKekError: a DEK is wrapped by a KEK that is not configured (nothing after
                the last flush is re-wrapped; roll back or fix the configuration and rerun).
            DecryptionError: a wrapped DEK was altered.
        """
        primary_id = self._keks.primary_id
        count = 0
        last_id = ""
        while batch := self._session.scalars(
            select(DataKey)
            .where(DataKey.kek_id != primary_id, DataKey.id > last_id)
            .order_by(DataKey.id)
            .limit(REWRAP_BATCH_SIZE)
        ).all():
            for data_key in batch:
                dek = self._unwrap(data_key)
                data_key.kek_id, data_key.wrapped_key = self._keks.wrap(
                    dek, _wrap_context(data_key.id, data_key.owner)
                )
            count += len(batch)
            last_id = batch[-1].id
            self._session.flush()
        return count

    def destroy(self, owner: str) -> int:
        """Delete every DEK of ``owner``, flushed (crypto-shredding): all of the owner's
        ciphertexts, wherever they are copied, become undecryptable with
        :class:`UnknownDataKeyError`. Returns how many DEKs were deleted (0 if none)."""
        data_keys = self._session.scalars(select(DataKey).where(DataKey.owner == owner)).all()
        for data_key in data_keys:
            self._deks.pop(data_key.id, None)
            if self._shared is not None:
                self._shared.forget(data_key.id)
            self._session.delete(data_key)
        self._session.flush()
        return len(data_keys)

    def _current(self, owner: str) -> DataKey | None:
        """``owner``'s current (non-retired) DEK row, or ``None`` when it has none."""
        statement = (
            select(DataKey)
            .where(DataKey.owner == owner, DataKey.retired_at.is_(None))
            # Two racing first encrypts can each create a DEK; both stay valid for decrypting.
            .order_by(DataKey.created_at.desc(), DataKey.id.desc())
            .limit(1)
        )
        return self._session.scalars(statement).first()

    def _current_of(self, owners: Collection[str]) -> dict[str, DataKey]:
        """The current DEK row of each of ``owners`` that has one (the newest, as in
        :meth:`_current`)."""
        found: dict[str, DataKey] = {}
        ordered = sorted(owners)
        for start in range(0, len(ordered), _LOOKUP_CHUNK):
            statement = (
                select(DataKey)
                .where(
                    DataKey.owner.in_(ordered[start : start + _LOOKUP_CHUNK]),
                    DataKey.retired_at.is_(None),
                )
                .order_by(DataKey.created_at, DataKey.id)  # the newest is kept
            )
            found.update((key.owner, key) for key in self._session.scalars(statement))
        return found

    def _create(self, owner: str, *, flush: bool = True) -> DataKey:
        """A new current DEK for ``owner``: random 256 bits wrapped under the primary KEK,
        added and (unless ``flush`` is false) flushed.

        Raises:
            ValueError: ``owner`` is empty or longer than 64 characters.
        """
        _check_owner(owner)
        key_id = secrets.token_hex(16)
        dek = secrets.token_bytes(aead.KEY_SIZE)
        kek_id, wrapped = self._keks.wrap(dek, _wrap_context(key_id, owner))
        data_key = DataKey(id=key_id, owner=owner, kek_id=kek_id, wrapped_key=wrapped)
        self._session.add(data_key)
        if flush:
            self._session.flush()
        self._deks[key_id] = dek
        return data_key

    def _dek(self, data_key: DataKey) -> bytes:
        """The unwrapped DEK of ``data_key``, from the cache when possible.

        Raises:
            UnknownKekError: its KEK is not configured.
            DecryptionError: its wrapped key was altered or moved to another row.
        """
        dek = self._deks.get(data_key.id)
        if dek is None:
            dek = self._deks[data_key.id] = self._unwrap(data_key)
        return dek

    def _unwrap(self, data_key: DataKey) -> bytes:
        """The DEK of ``data_key``, unwrapped by the KEK provider (never cached here).

        Raises:
            UnknownKekError: its KEK is not configured.
            DecryptionError: its wrapped key was altered or moved to another row.
        """
        return self._keks.unwrap(
            data_key.kek_id, data_key.wrapped_key, _wrap_context(data_key.id, data_key.owner)
        )


KeyringFactory = Callable[[Session], Keyring]
"""A :class:`Keyring` for a session (one per unit of work), on the deployment's KEKs."""


def _check_owner(owner: str) -> None:
    """Raises ValueError unless ``owner`` is 1-64 characters."""
    if not owner or len(owner) > MAX_OWNER_LENGTH:
        raise ValueError(f"owner must be 1-{MAX_OWNER_LENGTH} characters")


def _wrap_context(key_id: str, owner: str) -> str:
    """What a wrapped DEK is bound to: its own row, so it cannot be moved to another."""
    return f"data_key:{key_id}:{owner}"
