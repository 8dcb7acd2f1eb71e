"""A key-encryption-key provider for tests that need to see what the KEK layer was asked to do."""

from __future__ import annotations

from echo_identity.crypto.kek import LocalKekProvider


class RecordingKeks:
    """A LocalKekProvider that remembers every DEK it wraps (what a leaked backup would give)
    and counts unwraps."""

    def __init__(self, keys: list[bytes]) -> None:
        self._inner = LocalKekProvider(keys)
        self.wrapped: list[bytes] = []
        self.unwraps = 0

    @property
    def primary_id(self) -> str:
        return self._inner.primary_id

    def wrap(self, dek: bytes, context: str) -> tuple[str, bytes]:
        self.wrapped.append(dek)
        return self._inner.wrap(dek, context)

    def unwrap(self, kek_id: str, wrapped: bytes, context: str) -> bytes:
        self.unwraps += 1
        return self._inner.unwrap(kek_id, wrapped, context)
