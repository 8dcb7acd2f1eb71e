"""``echo-identity providers``: third-party OAuth providers users can connect."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from echo_identity.cli.runtime import (
    echo_error,
    emit,
    fail,
    json_option,
    services_or_exit,
    settings_or_exit,
)
from echo_identity.errors import EchoError

if TYPE_CHECKING:
    from echo_identity.vault.models import Provider


def _describe(provider: Provider) -> dict[str, object]:
    return {
        "name": provider.name,
        "issuer": provider.issuer,
        "authorize_url": provider.authorize_url,
        "token_url": provider.token_url,
        "revocation_url": provider.revocation_url,
        "client_id": provider.client_id,
        "scope": provider.scope,
        "authorize_params": provider.authorize_params,
    }


@click.group()
def providers() -> None:
    """Third-party OAuth providers (GitHub, Google, another OpenID provider …)."""


@providers.command()
@click.argument("name")
@click.option("--issuer", help="Take the endpoints from this issuer's discovery document.")
@click.option("--authorize-url", help="Authorization endpoint (without --issuer).")
@click.option("--token-url", help="Token endpoint (without --issuer).")
@click.option("--revocation-url", help="RFC 7009 revocation endpoint, if the provider has one.")
@click.option("--client-id", required=True, help="The client id the provider gave you.")
@click.option(
    "--client-secret-stdin",
    is_flag=True,
    required=True,
    help="Read the client secret from standard input (it is stored encrypted).",
)
@click.option("--scope", default="", help='Scopes to request, e.g. "repo read:user".')
@click.option(
    "--authorize-param",
    "authorize_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra authorization-request parameter (repeatable), e.g. access_type=offline.",
)
@json_option
def add(
    name: str,
    issuer: str | None,
    authorize_url: str | None,
    token_url: str | None,
    revocation_url: str | None,
    client_id: str,
    client_secret_stdin: bool,
    scope: str,
    authorize_params: tuple[str, ...],
    as_json: bool,
) -> None:
    """Register provider NAME. Register this callback URL with the provider first:
    <ECHO_ISSUER>/connections/callback

    \b
    Examples:
      printf '%s\\n' "$SECRET" | echo-identity providers add github \\
        --authorize-url https://github.com/login/oauth/authorize \\
        --token-url https://github.com/login/oauth/access_token \\
        --client-id Iv1.abc --client-secret-stdin --scope "repo read:user"
      printf '%s\\n' "$SECRET" | echo-identity providers add google \\
        --issuer https://accounts.google.com --client-id ID --client-secret-stdin \\
        --scope "openid email" --authorize-param access_type=offline \\
        --authorize-param prompt=consent
    """
    from echo_identity.audit.events import EventType  # imported when the command runs

    settings = settings_or_exit()
    params = {}
    for item in authorize_params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--authorize-param takes KEY=VALUE, not {item!r}", as_json=as_json)
        params[key] = value
    secret = sys.stdin.readline().rstrip("\r\n") if client_secret_stdin else ""
    services = services_or_exit(settings)
    with services.database.session() as session:
        try:
            provider = services.vault.service(session).providers.add(
                name,
                client_id=client_id,
                client_secret=secret,
                issuer=issuer,
                authorize_url=authorize_url,
                token_url=token_url,
                revocation_url=revocation_url,
                scope=scope,
                authorize_params=params,
            )
        except EchoError as exc:
            session.rollback()
            echo_error(exc, as_json=as_json)
        services.audit.record(
            session, EventType.PROVIDER_ADDED, actor="cli", details={"provider": name}
        )
        session.commit()
        callback = services.vault.callback_url
        emit(
            {**_describe(provider), "callback_url": callback},
            f"provider {name} added; users connect at {settings.issuer.rstrip('/')}"
            f"/connections/{name}/connect (callback {callback})",
            as_json=as_json,
        )


@providers.command("list")
@json_option
def list_providers(as_json: bool) -> None:
    """List providers (never their secrets)."""
    services = services_or_exit(settings_or_exit())
    with services.database.session() as session:
        found = services.vault.service(session).providers.list_providers()
        emit(
            {"providers": [_describe(p) for p in found]},
            "\n".join(f"{p.name}\t{p.token_url}" for p in found) or "no providers",
            as_json=as_json,
        )
