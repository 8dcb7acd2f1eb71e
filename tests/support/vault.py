"""A real upstream OAuth provider for vault tests: a second Echo Identity instance."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select

from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database
from tests.factories import TestUser, create_user
from tests.support.browser import Browser
from tests.support.oidc import (
    RegisteredClient,
    client_credentials_token,
    hidden_fields,
    register_client,
)
from tests.support.server import LiveServer, run_cli


@dataclass
class Upstream:
    """The provider side: its server and the client the vault uses there."""

    server: LiveServer
    client: RegisteredClient
    name: str

    def refresh_count(self) -> int:
        """How many refresh_token grants the upstream served for the vault's client."""
        database = Database(self.server.env["ECHO_DATABASE_URL"])
        try:
            with database.session() as session:
                return int(
                    session.scalar(
                        select(func.count())
                        .select_from(AuditEvent)
                        .where(
                            AuditEvent.event_type == "oauth.token.refreshed",
                            AuditEvent.client_id == self.client.client_id,
                        )
                    )
                    or 0
                )
        finally:
            database.dispose()

    def introspect(self, token: str) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.post(
            f"{self.server.base_url}/introspect",
            data={"token": token},
            auth=(self.client.client_id, self.client.client_secret or ""),
        ).json()
        return answer


def connect_upstream(vault: LiveServer, upstream: LiveServer, name: str) -> Upstream:
    """Register the vault as a client at the upstream, and the upstream as a vault provider."""
    client = register_client(
        upstream,
        "--name",
        f"Vault {name}",
        "--redirect-uri",
        f"{vault.base_url}/connections/callback",
        "--scope",
        "openid profile offline_access",
    )
    added = run_cli(
        vault.env,
        "providers",
        "add",
        name,
        "--issuer",
        upstream.env["ECHO_ISSUER"],
        "--client-id",
        client.client_id,
        "--client-secret-stdin",
        "--scope",
        "openid offline_access",
        "--json",
        stdin=f"{client.client_secret}\n",
    )
    assert added.returncode == 0, added.stderr
    return Upstream(upstream, client, name)


def run_connect_flow(
    vault: LiveServer, upstream: Upstream, user: TestUser
) -> tuple[Browser, TestUser]:
    """A user connects the upstream account through both consent pages; returns the browser
    (signed in at the vault) and the upstream account used. The vault consent names the
    services registered for the provider at that moment (register them first)."""
    browser = Browser(vault)
    browser.login(user.username, user.password)
    page = browser.get(f"/connections/{upstream.name}/connect")
    assert page.status_code == 200, page.text
    # The form echoes the services the page listed: the consent covers exactly those.
    to_provider = browser.post(
        f"/connections/{upstream.name}/connect", {**hidden_fields(page.text), "decision": "allow"}
    )
    assert to_provider.status_code == 302, to_provider.text
    upstream_user = create_user(upstream.server.env["ECHO_DATABASE_URL"])
    at_provider = Browser(upstream.server)
    at_provider.login(upstream_user.username, upstream_user.password)
    authorize = at_provider.get(
        to_provider.headers["location"].removeprefix(upstream.server.base_url)
    )
    if authorize.status_code == 200:  # the upstream's own consent page
        authorize = at_provider.post(
            "/authorize", {**hidden_fields(authorize.text), "decision": "allow"}
        )
    assert authorize.status_code == 302, authorize.text
    back = browser.get(authorize.headers["location"].removeprefix(vault.base_url))
    assert back.status_code == 302, back.text
    assert back.headers["location"] == "/account/connections"
    return browser, upstream_user


def vault_service_client(
    vault: LiveServer, provider: str, scope: str = "vault:read vault:revoke"
) -> RegisteredClient:
    return register_client(
        vault,
        "--name",
        "Billing",
        "--grant-type",
        "client_credentials",
        "--scope",
        scope,
        "--vault-provider",
        provider,
    )


def vault_api_token(vault: LiveServer, client: RegisteredClient) -> str:
    return str(client_credentials_token(vault, client)["access_token"])


def fetch_vault_token(
    vault: LiveServer, bearer: str, sub: str, provider: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{vault.base_url}/api/v1/users/{sub}/connections/{provider}/token",
        headers={"Authorization": f"Bearer {bearer}"},
        content=json.dumps(body or {}).encode(),
        timeout=30,
    )
