"""What an accepted Bearer token allows (:class:`BearerGrant`), apart from the decision in
:mod:`echo_identity.idp.bearer`, so the errors that carry a grant need not import that
decision."""

from __future__ import annotations

from dataclasses import dataclass

from echo_identity.accounts.models import User
from echo_identity.idp.access_token import AccessToken


@dataclass(frozen=True)
class BearerGrant(AccessToken):
    """What an accepted token allows: ``user`` is the user it was issued to (``None`` for a
    client's own client-credentials token)."""

    user: User | None

    @property
    def user_sub(self) -> str | None:
        """The ``sub`` of the token's user (read from the claims: no ORM access needed)."""
        return self.subject if self.user is not None else None
