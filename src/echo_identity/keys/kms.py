"""A key-encryption-key provider backed by an AWS KMS key: DEKs are wrapped by KMS ``Encrypt``
and unwrapped by KMS ``Decrypt``, so the KEK never leaves KMS and never reaches this process.

Needs the ``kms`` extra (``pip install 'echo-identity[kms]'``, which brings boto3); import this
module only when KMS is configured (:func:`echo_identity.keys.kek_providers.kek_provider`).

The KEK id stored beside each wrapped DEK is ``kms:`` followed by the configured key id or
alias, which is not secret (an ARN is longer than the ``data_keys.kek_id`` column). Each wrapped
DEK is bound to its row by the KMS encryption context ``{"echo-identity": <context>}``, which KMS
also writes to CloudTrail, so the context must stay free of secrets (the Keyring's
``data_key:<id>:<owner>`` is). Errors::

    DecryptionError              (crypto.aead) wrapped for another key or context, altered, or
    │                            KMS refused (access denied, key disabled or deleted)
    ├── UnknownKekError          (crypto.kek) the KEK id is not this provider's KMS key
    └── KmsUnavailableError      KMS could not answer (throttled, timed out, unreachable) even
                                 after retries; the wrapped DEK may be fine, try again later
    KmsWrapError                 KMS refused or failed to wrap a new DEK
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from echo_identity.crypto.aead import DecryptionError
from echo_identity.crypto.kek import UnknownKekError

KEK_ID_PREFIX = "kms:"
_PRINTABLE_ASCII = re.compile(r"[!-~]+")
# The width of data_keys.kek_id, which stores the KEK id of every wrapped DEK.
MAX_KEK_ID_LENGTH = 300
ENCRYPTION_CONTEXT_KEY = "echo-identity"

# Errors after which the same request may well succeed later: KMS did not judge the ciphertext.
_TRANSIENT_ERROR_CODES = frozenset(
    {
        "DependencyTimeoutException",
        "InternalFailure",
        "KMSInternalException",
        "KeyUnavailableException",
        "ServiceUnavailable",
        "ThrottlingException",
    }
)


def client_config() -> Config:
    """Timeouts and retries for the KMS client: unwrapping sits on the path that hands out a
    token, so a slow KMS must fail in seconds, not hang a request for a minute."""
    return Config(
        connect_timeout=3,
        read_timeout=5,
        retries={"mode": "standard", "max_attempts": 3},
    )


class KmsClient(Protocol):
    """The two operations of a boto3 KMS client (``boto3.client("kms")``) this module uses."""

    def encrypt(self, **kwargs: Any) -> Mapping[str, Any]: ...

    def decrypt(self, **kwargs: Any) -> Mapping[str, Any]: ...


class KmsUnavailableError(DecryptionError):
    """KMS did not answer an unwrap (throttling, timeout, outage, no credentials) even after
    the client's retries. Nothing is known to be wrong with the wrapped DEK."""

    code = "kms_unavailable"


class KmsWrapError(Exception):
    """KMS refused or failed to wrap a new DEK (access denied, key disabled, KMS unreachable).
    The message names the key and the AWS error code, never key material."""

    code = "kms_wrap_failed"


class KmsKekProvider:
    """Wraps DEKs under one AWS KMS key, which is both the primary and the only KEK.

    ``client`` is a boto3 KMS client, best created with :func:`client_config`.
    """

    def __init__(self, key_id: str, client: KmsClient) -> None:
        """Wrap and unwrap with KMS key ``key_id`` (key id or alias name) through ``client``.

        Raises:
            ValueError: ``key_id`` is empty, not printable ASCII, or too long for its KEK id to
                fit the ``data_keys.kek_id`` column.
        """
        if not _PRINTABLE_ASCII.fullmatch(key_id):
            raise ValueError("the KMS key id must be a key id or alias name, without spaces")
        if len(KEK_ID_PREFIX + key_id) > MAX_KEK_ID_LENGTH:
            raise ValueError(
                f"the KMS key id {key_id!r} is longer than "
                f"{MAX_KEK_ID_LENGTH - len(KEK_ID_PREFIX)} characters; use the key id "
                "(a UUID), an alias name (alias/…) or the key's ARN"
            )
        self._key_id = key_id
        self._client = client
        self._primary_id = KEK_ID_PREFIX + key_id

    @property
    def primary_id(self) -> str:
        """``kms:`` and the configured key id or alias."""
        return self._primary_id

    def wrap(self, dek: bytes, context: str) -> tuple[str, bytes]:
        """``dek`` encrypted by the KMS key and bound to ``context``, with the KEK id.

        Raises:
            KmsWrapError: KMS refused the request or could not be reached.
        """
        try:
            response = self._client.encrypt(
                KeyId=self._key_id, Plaintext=dek, EncryptionContext=_encryption_context(context)
            )
        except ClientError as exc:
            raise KmsWrapError(
                f"KMS key {self._key_id!r} could not wrap a data key: {_error_code(exc)}"
            ) from exc
        except BotoCoreError as exc:
            raise KmsWrapError(
                f"KMS key {self._key_id!r} could not wrap a data key: {type(exc).__name__}"
            ) from exc
        return self._primary_id, bytes(response["CiphertextBlob"])

    def unwrap(self, kek_id: str, wrapped: bytes, context: str) -> bytes:
        """The DEK that :meth:`wrap` wrapped for ``context``.

        Raises:
            UnknownKekError: ``kek_id`` is not this provider's KMS key.
            KmsUnavailableError: KMS could not answer, even after retries.
            DecryptionError: KMS refused: ``wrapped`` is from another key, was wrapped for
                another context or was altered, or access to the key is denied, or the key is
                disabled or deleted.
        """
        if kek_id != self._primary_id:
            raise UnknownKekError(kek_id)
        try:
            response = self._client.decrypt(
                CiphertextBlob=wrapped,
                KeyId=self._key_id,
                EncryptionContext=_encryption_context(context),
            )
        except ClientError as exc:
            code = _error_code(exc)
            if code in _TRANSIENT_ERROR_CODES:
                raise KmsUnavailableError(
                    f"KMS key {self._key_id!r} is unavailable for unwrapping: {code}"
                ) from exc
            raise DecryptionError(
                f"KMS key {self._key_id!r} refused to unwrap the data key: {code} (wrapped "
                "by another key or for another row, altered, or access to the key denied)"
            ) from exc
        except BotoCoreError as exc:
            raise KmsUnavailableError(
                f"KMS key {self._key_id!r} is unavailable for unwrapping: {type(exc).__name__}"
            ) from exc
        return bytes(response["Plaintext"])


def _encryption_context(context: str) -> dict[str, str]:
    return {ENCRYPTION_CONTEXT_KEY: context}


def _error_code(exc: ClientError) -> str:
    """The AWS error code (``AccessDeniedException`` …). Our messages carry the code only, to
    stay stable; the AWS message stays on ``__cause__`` for operators."""
    return str(exc.response.get("Error", {}).get("Code", "UnknownError"))
