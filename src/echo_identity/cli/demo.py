"""``echo-identity demo``: a demo user and OAuth client for a development machine."""

from __future__ import annotations

import click

from echo_identity.cli.runtime import emit, fail, json_option, services_or_exit, settings_or_exit
from echo_identity.crypto.digests import random_token

DEMO_USERNAME = "demo"
DEMO_CLIENT_NAME = "Demo client"
DEMO_REDIRECT_URI = "http://127.0.0.1:9000/callback"


@click.command()
@json_option
def demo(as_json: bool) -> None:
    """Create the demo user and client once, print their credentials and the useful URLs.

    Development mode only. Credentials are printed when they are created and never stored
    in clear; reset the demo password with `echo-identity users set-password demo`.
    """
    from echo_identity.idp.clients import ClientRegistry  # imported when it runs

    settings = settings_or_exit()
    if settings.production:
        fail("demo data is for development machines; set ECHO_DEV_MODE=1", as_json=as_json)
    services = services_or_exit(settings)
    with services.database.session() as session:
        accounts = services.accounts.service(session)
        clients = ClientRegistry(session, settings.secret_key_bytes())

        payload: dict[str, object] = {"issuer": settings.issuer}
        lines = []
        user = accounts.find(DEMO_USERNAME)
        if user is None:
            password = random_token(12)
            user = accounts.create_user(DEMO_USERNAME, "demo@example.org", password)
            payload["user"] = {"username": user.username, "password": password, "sub": user.sub}
            lines.append(f"Demo user       {user.username} / {password}   (shown once)")
        else:
            payload["user"] = {"username": user.username, "sub": user.sub}
            lines.append(
                f"Demo user       {user.username}   (password shown at first start;"
                " reset: echo-identity users set-password demo)"
            )
        client = clients.find_by_name(DEMO_CLIENT_NAME)
        if client is None:
            registered = clients.create(DEMO_CLIENT_NAME, redirect_uris=[DEMO_REDIRECT_URI])
            client = registered.client
            payload["client"] = {
                "client_id": client.client_id,
                "client_secret": registered.client_secret,
                "redirect_uris": client.redirect_uris,
            }
            lines.append(
                f"Demo client     {client.client_id} / {registered.client_secret}   (shown once)"
            )
        else:
            payload["client"] = {
                "client_id": client.client_id,
                "redirect_uris": client.redirect_uris,
            }
            lines.append(f"Demo client     {client.client_id}")
        session.commit()
        lines.append(f"  redirect URI  {DEMO_REDIRECT_URI}")
        base = settings.issuer.rstrip("/")
        urls = {
            "login": f"{base}/login",
            "account": f"{base}/account",
            "sessions": f"{base}/account/sessions",
            "health": f"{base}/healthz",
            "discovery": f"{base}/.well-known/openid-configuration",
        }
        payload["urls"] = urls
        lines += [f"{name.capitalize():<16}{url}" for name, url in urls.items()]
        emit(payload, "\n".join(lines), as_json=as_json)
