"""Who may touch whose connection through the /api/v1 vault API (docs/vault.md "Who may fetch
whose token"), given an accepted bearer token (:class:`~echo_identity.idp.bearer.BearerGrant`):

- its client is registered for the provider (``clients create --vault-provider NAME``);
- a token issued to a user (code or refresh grant) reaches only that user's connections;
- a client's own (client-credentials) token reaches a user's connection only while that user's
  active consent for the provider names the client (:mod:`echo_identity.vault.consents`).

Every refusal is the same :class:`~echo_identity.vault.errors.VaultAccessDeniedError`, whether
the user exists or not, so the API cannot be used to enumerate users.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.idp.bearer import BearerGrant
from echo_identity.idp.models import OAuthClient
from echo_identity.vault.consents import VaultConsents
from echo_identity.vault.errors import VaultAccessDeniedError


class VaultAccess:
    """The access decisions of the vault API, in one database session (reads only)."""

    def __init__(
        self,
        session: Session,
        consents: VaultConsents,
        registered_providers: Callable[[str], Collection[str]] | None = None,
    ) -> None:
        """``registered_providers``: the providers a client is registered for, from the app's
        client cache (``Provider.vault_providers_of``); ``None`` reads them from the database."""
        self._session = session
        self._consents = consents
        self._registered = registered_providers or self._registered_in_database

    def reach(self, grant: BearerGrant, sub: str) -> tuple[User, set[str]]:
        """The user ``sub`` and the providers whose connections of that user ``grant`` may
        touch.

        Raises :class:`VaultAccessDeniedError` for a token of another user, and for a client's
        own token that no consent of ``sub`` covers (unknown and disabled users included).
        """
        providers = set(self._registered(grant.client_id))
        if grant.user is not None:  # issued to a user: that user's connections only
            if sub != grant.user_sub:
                raise VaultAccessDeniedError()
            return grant.user, providers
        covered = self._consents.covered_providers(sub, grant.client_id)
        if covered is None or not covered[1] & providers:
            raise VaultAccessDeniedError()
        return covered[0], covered[1] & providers

    def target(self, grant: BearerGrant, sub: str, provider_name: str) -> User:
        """The user whose ``provider_name`` connection the call touches; raises
        :class:`VaultAccessDeniedError`."""
        user, providers = self.reach(grant, sub)
        if provider_name not in providers:
            raise VaultAccessDeniedError()
        return user

    def _registered_in_database(self, client_id: str) -> Collection[str]:
        registered = self._session.scalar(
            select(OAuthClient.vault_providers).where(OAuthClient.client_id == client_id)
        )
        return registered or ()

    def existing_sub(self, sub: str) -> str | None:
        """``sub`` if a user has it, else ``None``: a refusal names the path's user in the
        trail only if they exist, so refusals never map random strings to pseudonyms."""
        return self._session.scalar(select(User.sub).where(User.sub == sub))
