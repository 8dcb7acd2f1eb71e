"""Password hashing with argon2id, rehash-on-login, and equal-cost checks for unknown users."""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from echo_identity.crypto.digests import random_token

MIN_LENGTH = 8
MAX_LENGTH = 1024  # bounds the cost an attacker can make us spend per attempt


class Passwords:
    """argon2id with the configured cost parameters."""

    def __init__(self, time_cost: int, memory_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        # Made up front: building it lazily would make the first unknown-user login slower.
        self._dummy_hash = self._hasher.hash(random_token())

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """True when ``password`` matches; False for a mismatch or an unreadable hash."""
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_unknown_user(self, password: str) -> None:
        """Spend the same work as :meth:`verify` so unknown usernames are not revealed by timing."""
        self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)


def acceptable_password(password: str) -> bool:
    """True when ``password`` meets the length policy (NIST SP 800-63B: length, not rules)."""
    return MIN_LENGTH <= len(password) <= MAX_LENGTH
