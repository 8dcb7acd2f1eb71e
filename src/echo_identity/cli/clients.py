"""``echo-identity clients``: register and manage OAuth clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from echo_identity.cli.runtime import (
    database_or_exit,
    echo_error,
    emit,
    json_option,
    services_or_exit,
    settings_or_exit,
)
from echo_identity.errors import EchoError

if TYPE_CHECKING:  # idp loads Authlib and SQLAlchemy: imported when a command runs
    from echo_identity.idp.models import OAuthClient

# The choices of idp.clients, repeated so that --help imports neither Authlib nor SQLAlchemy;
# tests/unit/test_cli.py fails when they drift apart.
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
ID_TOKEN_ALGORITHMS = ("RS256", "ES256", "EdDSA")


def _describe(client: OAuthClient) -> dict[str, object]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "public": client.public,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "grant_types": client.grant_types,
        "scope": client.scope,
        "audiences": client.audiences,
        "id_token_alg": client.id_token_alg,
        "vault_providers": client.vault_providers,
        "disabled": client.disabled,
    }


@click.group()
def clients() -> None:
    """Register and manage OAuth clients (relying parties and services)."""


@clients.command()
@click.option("--name", required=True, help="Shown to users on the consent page.")
@click.option(
    "--redirect-uri",
    "redirect_uris",
    multiple=True,
    help="Exact redirect URI (repeatable); https, or http on loopback.",
)
@click.option(
    "--post-logout-redirect-uri",
    "logout_uris",
    multiple=True,
    help="Where RP-initiated logout may send the user (repeatable).",
)
@click.option(
    "--grant-type",
    "grant_types",
    multiple=True,
    type=click.Choice(GRANT_TYPES),
    help="Allowed grant (repeatable). Default: authorization_code and refresh_token, "
    "or client_credentials when no redirect URI is given.",
)
@click.option(
    "--scope",
    default="openid profile email offline_access",
    show_default=True,
    help="Space-separated scopes the client may request.",
)
@click.option(
    "--audience",
    "audiences",
    multiple=True,
    help="Audience of its access tokens and the names it verifies tokens for (repeatable). "
    "Default: its client_id plus the Echo APIs its scope calls for (/api/v1 for vault:* and "
    "audit:read, /log for logs:write); with --audience, exactly the values given "
    "(docs/oidc.md, Audiences).",
)
@click.option("--public", is_flag=True, help="A public client (SPA, native app): no secret.")
@click.option(
    "--id-token-alg", type=click.Choice(ID_TOKEN_ALGORITHMS), default="RS256", show_default=True
)
@click.option(
    "--vault-provider",
    "vault_providers",
    multiple=True,
    help="Token-vault provider whose users' tokens this client may fetch "
    "(repeatable; needs scope vault:read).",
)
@json_option
def create(
    name: str,
    redirect_uris: tuple[str, ...],
    logout_uris: tuple[str, ...],
    grant_types: tuple[str, ...],
    scope: str,
    audiences: tuple[str, ...],
    public: bool,
    id_token_alg: str,
    vault_providers: tuple[str, ...],
    as_json: bool,
) -> None:
    """Register a client. Its secret is printed once and stored only as a keyed digest.

    \b
    Examples:
      echo-identity clients create --name "Web app" --redirect-uri https://app.example/cb --json
      echo-identity clients create --name "Billing service" --grant-type client_credentials \\
          --scope "vault:read" --json
    """
    from echo_identity.audit.events import EventType  # imported when the command runs
    from echo_identity.idp.clients import ClientRegistry

    settings = settings_or_exit()
    services = services_or_exit(settings)
    grants = grant_types or (
        ("authorization_code", "refresh_token") if redirect_uris else ("client_credentials",)
    )
    with services.database.session() as session:
        try:
            registered = ClientRegistry(session, settings.secret_key_bytes()).create(
                name,
                redirect_uris=redirect_uris,
                grant_types=grants,
                scope=scope,
                public=public,
                post_logout_redirect_uris=logout_uris,
                audiences=audiences,
                id_token_alg=id_token_alg,
                vault_providers=vault_providers,
            )
        except EchoError as exc:
            echo_error(exc, as_json=as_json)
        services.audit.record(
            session, EventType.CLIENT_CREATED, actor="cli", client_id=registered.client.client_id
        )
        session.commit()
    payload = {**_describe(registered.client), "client_id": registered.client.client_id}
    if registered.client_secret is not None:
        payload["client_secret"] = registered.client_secret
    human = f"client_id     {registered.client.client_id}"
    if registered.client_secret is not None:
        human += f"\nclient_secret {registered.client_secret}   (shown once; store it now)"
        # Say what the prefix is for, so whoever finds a leaked one knows what it is.
        human += "\n              (echo_cs_ + checksum: secret scanners recognise it if it leaks)"
    emit(payload, human, as_json=as_json)


@clients.command("list")
@json_option
def list_clients(as_json: bool) -> None:
    """List registered clients (never their secrets)."""
    from echo_identity.idp.clients import ClientRegistry  # imported when the command runs

    settings = settings_or_exit()
    with database_or_exit(settings).session() as session:
        found = ClientRegistry(session, settings.secret_key_bytes()).list_clients()
    lines = [
        f"{c.client_id}\t{c.name}\t{','.join(c.grant_types)}" + ("\tdisabled" if c.disabled else "")
        for c in found
    ]
    emit(
        {"clients": [_describe(c) for c in found]},
        "\n".join(lines) or "no clients",
        as_json=as_json,
    )


@clients.command()
@click.argument("client_id")
@click.option("--enable", is_flag=True, help="Re-enable instead of disabling.")
@json_option
def disable(client_id: str, enable: bool, as_json: bool) -> None:
    """Disable CLIENT_ID: it is refused at every endpoint within a second (every worker
    re-reads a client at least once a second)."""
    from echo_identity.audit.events import EventType  # imported when the command runs
    from echo_identity.idp.clients import ClientRegistry

    settings = settings_or_exit()
    services = services_or_exit(settings)
    with services.database.session() as session:
        try:
            row = ClientRegistry(session, settings.secret_key_bytes()).set_disabled(
                client_id, not enable
            )
        except EchoError as exc:
            echo_error(exc, as_json=as_json)
        if not enable:
            services.audit.record(
                session, EventType.CLIENT_DISABLED, actor="cli", client_id=client_id
            )
        session.commit()
    emit(
        _describe(row), f"client {client_id} {'enabled' if enable else 'disabled'}", as_json=as_json
    )


@clients.command("rotate-secret")
@click.argument("client_id")
@json_option
def rotate_secret(client_id: str, as_json: bool) -> None:
    """Give CLIENT_ID a new secret, printed once; the old one is refused from now on (every
    server re-reads a client at least once a second). There is no grace period: deploy the
    new secret to the client right away. Tokens already issued stay valid: end them with
    `clients revoke-tokens`.
    """
    from echo_identity.audit.events import EventType, Severity  # imported when the command runs
    from echo_identity.idp.clients import ClientRegistry

    settings = settings_or_exit()
    services = services_or_exit(settings)
    with services.database.session() as session:
        try:
            rotated = ClientRegistry(session, settings.secret_key_bytes()).rotate_secret(client_id)
        except EchoError as exc:
            echo_error(exc, as_json=as_json)
        services.audit.record(
            session,
            EventType.CLIENT_SECRET_ROTATED,
            actor="cli",
            client_id=client_id,
            severity=Severity.WARNING,
        )
        session.commit()
    secret = rotated.client_secret or ""
    emit(
        {"client_id": client_id, "client_secret": secret},
        f"client_id     {client_id}\nclient_secret {secret}   (shown once; store it now; "
        "the old secret no longer works)",
        as_json=as_json,
    )


@clients.command("revoke-tokens")
@click.argument("client_id")
@json_option
def revoke_tokens(client_id: str, as_json: bool) -> None:
    """Revoke everything CLIENT_ID holds: every refresh-token family, every authorization
    code not yet redeemed, and every access token issued until now, client-credentials
    tokens included (refused at /verify, /introspect, /userinfo and the APIs within a
    second). New tokens can be fetched from the next second on: rotate the secret first
    (`clients rotate-secret`) when it leaked.
    """
    from echo_identity.audit.events import EventType, Severity  # imported when the command runs
    from echo_identity.idp.clients import ClientRegistry
    from echo_identity.idp.errors import UnknownClientError
    from echo_identity.idp.revocation import Revocations

    settings = settings_or_exit()
    services = services_or_exit(settings)
    with services.database.session() as session:
        if ClientRegistry(session, settings.secret_key_bytes()).find(client_id) is None:
            echo_error(UnknownClientError(), as_json=as_json)
        revoked = Revocations(session).revoke_client_grants(client_id, "client_tokens_revoked")
        services.audit.record(
            session,
            EventType.CLIENT_TOKENS_REVOKED,
            actor="cli",
            client_id=client_id,
            severity=Severity.WARNING,
            details=revoked,
        )
        session.commit()
    emit(
        {"client_id": client_id, "revoked": revoked},
        f"client {client_id}: revoked {revoked['token_families']} token family(ies), deleted "
        f"{revoked['authorization_codes']} unredeemed code(s)",
        as_json=as_json,
    )
