"""Key-encryption keys (KEKs): what wraps the data-encryption keys (DEKs) stored in the database.

A :class:`KekProvider` holds one or more KEKs. The *primary* one wraps new DEKs; every
configured one unwraps, so KEK rotation is: configure the new KEK first, keep the old one,
re-wrap the DEKs (``Keyring.rewrap_all``), then drop the old KEK. Providers never hand out a
KEK, only wrap and unwrap with it, so a KMS-backed provider fits the same protocol.

Errors (see :mod:`echo_identity.crypto.aead` for the whole hierarchy)::

    DecryptionError         wrapped DEK altered, or bound to another context
    └── UnknownKekError     no configured KEK has the requested KEK id
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from echo_identity.crypto import aead
from echo_identity.crypto.aead import DecryptionError


class UnknownKekError(DecryptionError):
    """No configured KEK has this id: the KEK was removed before its DEKs were re-wrapped."""

    code = "unknown_kek"

    def __init__(self, kek_id: str) -> None:
        self.kek_id = kek_id
        super().__init__(f"no configured key-encryption key has id {kek_id!r}")


class KekProvider(Protocol):
    """Wraps and unwraps DEKs under key-encryption keys identified by a public KEK id."""

    @property
    def primary_id(self) -> str:
        """The id of the KEK that :meth:`wrap` uses."""
        ...

    def wrap(self, dek: bytes, context: str) -> tuple[str, bytes]:
        """``dek`` wrapped under the primary KEK and bound to ``context``, with that KEK's id."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes, context: str) -> bytes:
        """The DEK that :meth:`wrap` wrapped under KEK ``kek_id`` for ``context``.

        Raises:
            UnknownKekError: no configured KEK has id ``kek_id``.
            DecryptionError: ``wrapped`` was altered or was wrapped for another context.
        """
        ...


def local_kek_id(key: bytes) -> str:
    """The public id of a local KEK: ``local:`` and 16 hex digits of a domain-separated
    SHA-256 of the key, which identifies the key without revealing anything usable about it."""
    return "local:" + hashlib.sha256(b"echo-identity kek id" + key).hexdigest()[:16]


class LocalKekProvider:
    """KEKs held in process memory (from ``ECHO_VAULT_KEK``); the first one is primary.

    A wrapped DEK is an :mod:`~echo_identity.crypto.aead` ciphertext of the DEK under the KEK,
    whose header names the KEK id, with context ``dek:<context>``.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        """Hold ``keys``; the first wraps, all unwrap.

        Raises:
            ValueError: no key is given, a key is not 32 bytes, or a key is given twice.
        """
        if not keys:
            raise ValueError("at least one key-encryption key is required")
        self._keys: dict[str, bytes] = {}
        for key in keys:
            if len(key) != aead.KEY_SIZE:
                raise ValueError(f"key-encryption keys are {aead.KEY_SIZE} bytes, got {len(key)}")
            kek_id = local_kek_id(key)
            if kek_id in self._keys:
                raise ValueError(f"key-encryption key {kek_id} is configured twice")
            self._keys[kek_id] = key
        self._primary_id = local_kek_id(keys[0])

    @property
    def primary_id(self) -> str:
        """The id of the first configured KEK, which wraps new DEKs."""
        return self._primary_id

    def wrap(self, dek: bytes, context: str) -> tuple[str, bytes]:
        """``dek`` wrapped under the primary KEK and bound to ``context``, with that KEK's id.

        Raises:
            ValueError: ``context`` cannot be encoded as UTF-8.
        """
        kek_id = self._primary_id
        return kek_id, aead.encrypt(self._keys[kek_id], kek_id, dek, "dek:" + context)

    def unwrap(self, kek_id: str, wrapped: bytes, context: str) -> bytes:
        """The DEK that :meth:`wrap` wrapped under KEK ``kek_id`` for ``context``.

        Raises:
            UnknownKekError: no configured KEK has id ``kek_id``.
            DecryptionError: ``wrapped`` was altered, was wrapped for another context, or
                names a different KEK in its header than ``kek_id``.
            ValueError: ``context`` cannot be encoded as UTF-8.
        """
        key = self._keys.get(kek_id)
        if key is None:
            raise UnknownKekError(kek_id)
        if aead.key_id_of(wrapped) != kek_id:
            raise DecryptionError(f"wrapped key was not wrapped by key-encryption key {kek_id!r}")
        return aead.decrypt(key, wrapped, "dek:" + context)
