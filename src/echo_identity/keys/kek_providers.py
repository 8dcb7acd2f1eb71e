"""The key-encryption-key provider the settings ask for (:func:`kek_provider`), and the
keyrings built on it (:func:`keyring_factory`).

- Only ``ECHO_VAULT_KEK``: a :class:`~echo_identity.crypto.kek.LocalKekProvider`.
- ``ECHO_KMS_KEY_ID``: the AWS KMS key wraps new DEKs. Local KEKs from ``ECHO_VAULT_KEK``, if
  any, still unwrap, which is how a deployment moves from local keys to KMS: set
  ``ECHO_KMS_KEY_ID`` beside ``ECHO_VAULT_KEK``, re-wrap every DEK under KMS
  (``Keyring.rewrap_all``), then remove ``ECHO_VAULT_KEK``.

boto3 is imported only when KMS is configured, so the base install (without the ``kms``
extra) works with local keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from echo_identity.cache import FreshFor
from echo_identity.config import ConfigError, Settings
from echo_identity.crypto.kek import KekProvider, LocalKekProvider, UnknownKekError
from echo_identity.keys.keyring import Keyring, KeyringFactory

KMS_EXTRA_HINT = "install it with: pip install 'echo-identity[kms]'"


class CombinedKekProvider:
    """A primary provider that wraps, and further providers that only unwrap.

    KEK ids name their provider's scheme before the first colon (``local:…``, ``kms:…``); each
    KEK id is unwrapped by the provider of its scheme.
    """

    def __init__(self, primary: KekProvider, unwrap_only: Sequence[KekProvider]) -> None:
        """Wrap with ``primary``; unwrap with it and with ``unwrap_only``.

        Raises:
            ValueError: two providers have the same KEK id scheme.
        """
        self._primary = primary
        self._by_scheme: dict[str, KekProvider] = {}
        for provider in (primary, *unwrap_only):
            scheme = _scheme(provider.primary_id)
            if scheme in self._by_scheme:
                raise ValueError(f"two key-encryption-key providers have {scheme}: ids")
            self._by_scheme[scheme] = provider

    @property
    def primary_id(self) -> str:
        """The primary provider's KEK id, which :meth:`wrap` uses."""
        return self._primary.primary_id

    def wrap(self, dek: bytes, context: str) -> tuple[str, bytes]:
        """``dek`` wrapped by the primary provider; raises what the primary raises."""
        return self._primary.wrap(dek, context)

    def unwrap(self, kek_id: str, wrapped: bytes, context: str) -> bytes:
        """The DEK that KEK ``kek_id`` wrapped for ``context``.

        Raises:
            UnknownKekError: no provider has KEK ids of this scheme, or the provider that does
                has no KEK with this id.
            DecryptionError: ``wrapped`` was altered or was wrapped for another context.
        """
        provider = self._by_scheme.get(_scheme(kek_id))
        if provider is None:
            raise UnknownKekError(kek_id)
        return provider.unwrap(kek_id, wrapped, context)


def kek_provider(settings: Settings) -> KekProvider:
    """The KEK provider for ``settings``: local keys, an AWS KMS key, or KMS wrapping with local
    keys still unwrapping (see the module docstring).

    Creates the boto3 client but makes no request to KMS.

    Raises:
        ConfigError: neither ``ECHO_VAULT_KEK`` nor ``ECHO_KMS_KEY_ID`` is set, a value is
            unusable, no AWS region is known, or KMS is configured but boto3 is not installed.
    """
    local_keys = settings.vault_keks()
    if settings.kms_key_id is None:
        return LocalKekProvider(local_keys)
    kms = kms_provider(settings.kms_key_id, settings.kms_region)
    if not local_keys:
        return kms
    return CombinedKekProvider(kms, [LocalKekProvider(local_keys)])


def keyring_factory(settings: Settings) -> KeyringFactory:
    """A :data:`~echo_identity.keys.keyring.KeyringFactory` on the KEK provider of
    ``settings`` (:func:`kek_provider`), which is built once, here.

    Raises:
        ConfigError: as :func:`kek_provider`.
    """
    keks = kek_provider(settings)
    unwrapped: FreshFor[bytes] = FreshFor()  # DEKs decrypt() unwrapped, each for 1 s at most

    def keyring_for(session: Session) -> Keyring:
        return Keyring(session, keks, unwrapped)

    return keyring_for


def kms_provider(
    key_id: str, region: str | None, *, variable: str = "ECHO_KMS_KEY_ID"
) -> KekProvider:
    """A :class:`~echo_identity.keys.kms.KmsKekProvider` for ``key_id`` in ``region`` (``None``:
    boto3's own resolution); ``variable`` names the setting ``key_id`` came from in errors
    (the vault's KEK, or the backup key: ``ECHO_BACKUP_KMS_KEY_ID``).

    Raises:
        ConfigError: boto3 is missing, the region is unknown or invalid, or ``key_id`` is
            unusable.
    """
    try:
        import boto3  # type: ignore[import-untyped]
        from botocore.exceptions import (  # type: ignore[import-untyped]
            InvalidRegionError,
            NoRegionError,
        )

        from echo_identity.keys.kms import KmsKekProvider, client_config
    except ImportError:
        raise ConfigError(variable, "is set but boto3 is not installed", KMS_EXTRA_HINT) from None
    try:
        # An own session: the default one is shared by the whole process and not thread-safe.
        client = boto3.session.Session().client("kms", region_name=region, config=client_config())
    except NoRegionError:
        raise ConfigError(
            "ECHO_KMS_REGION",
            "is not set and boto3 found no AWS region",
            "set ECHO_KMS_REGION or AWS_REGION to the region of the KMS key",
        ) from None
    except InvalidRegionError:
        raise ConfigError("ECHO_KMS_REGION", "is not a valid AWS region name") from None
    try:
        return KmsKekProvider(key_id, client)
    except ValueError as exc:
        raise ConfigError(variable, f"is unusable: {exc}") from None


def _scheme(kek_id: str) -> str:
    return kek_id.partition(":")[0]
