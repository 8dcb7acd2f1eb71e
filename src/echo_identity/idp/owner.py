"""The resource owner as the grants see it: the user plus when they authenticated."""

from __future__ import annotations

from dataclasses import dataclass

from echo_identity.accounts.models import User


@dataclass(frozen=True)
class ResourceOwner:
    user: User
    auth_time: int | None

    def get_user_id(self) -> str:
        return self.user.sub
