"""A relying party built on Authlib's OAuth 2.0 client, for driving the provider like a real app."""

from __future__ import annotations

import html
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.factories import create_client
from tests.support.browser import Browser, csrf_token
from tests.support.environment import settings_for
from tests.support.server import LiveServer, run_cli

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never served: tests read the redirect
LOGOUT_URI = "http://127.0.0.1:9/signed-out"


@dataclass
class RegisteredClient:
    client_id: str
    client_secret: str | None
    raw: dict[str, Any] = field(default_factory=dict)


def cli_register_client(server: LiveServer, *args: str) -> RegisteredClient:
    """``echo-identity clients create ARGS --json`` on the server's database (the command line
    itself under test; set-up uses :func:`register_client`)."""
    result = run_cli(server.env, "clients", "create", *args, "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    return RegisteredClient(created["client_id"], created.get("client_secret"), created)


def register_client(server: LiveServer, *args: str) -> RegisteredClient:
    """Register a client on the server's database through :func:`tests.factories.create_client`.

    ``args`` are options of ``echo-identity clients create``, read by that command's own
    parser, so a set-up reads like the command an operator would type.
    """
    from echo_identity.cli.clients import create

    with create.make_context("create", [*args]) as context:
        options = dict(context.params)
    redirect_uris = options["redirect_uris"]
    grants = options["grant_types"] or (  # the command's default, as its --help states
        ("authorization_code", "refresh_token") if redirect_uris else ("client_credentials",)
    )
    registered = create_client(
        settings_for(server.env),
        options["name"],
        redirect_uris=redirect_uris,
        grant_types=grants,
        scope=options["scope"],
        public=options["public"],
        post_logout_redirect_uris=options["logout_uris"],
        audiences=options["audiences"],
        id_token_alg=options["id_token_alg"],
        vault_providers=options["vault_providers"],
    )
    client = registered.client
    raw = {
        "client_id": client.client_id,
        "name": client.name,
        "public": client.public,
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grant_types,
        "scope": client.scope,
        "audiences": client.audiences,
    }
    return RegisteredClient(client.client_id, registered.client_secret, raw)


def web_client(server: LiveServer, *extra: str) -> RegisteredClient:
    return register_client(
        server,
        "--name",
        "Test RP",
        "--redirect-uri",
        REDIRECT_URI,
        "--post-logout-redirect-uri",
        LOGOUT_URI,
        *extra,
    )


def discovery(server: LiveServer) -> dict[str, Any]:
    metadata: dict[str, Any] = httpx.get(
        f"{server.base_url}/.well-known/openid-configuration"
    ).json()
    return metadata


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class RelyingParty:
    """One application's view: Authlib OAuth2Client plus ID-token validation against /jwks."""

    def __init__(self, server: LiveServer, client: RegisteredClient, scope: str) -> None:
        self.server = server
        self.client = client
        self.metadata = discovery(server)
        self.oauth = OAuth2Session(
            client_id=client.client_id,
            client_secret=client.client_secret,
            token_endpoint_auth_method="client_secret_basic" if client.client_secret else "none",
            scope=scope,
            redirect_uri=REDIRECT_URI,
            code_challenge_method="S256",
        )
        self.code_verifier = secrets.token_urlsafe(48)
        self.nonce = secrets.token_urlsafe(16)
        self.state = ""

    def close(self) -> None:
        self.oauth.close()

    def authorization_url(self, **params: str) -> str:
        url, self.state = self.oauth.create_authorization_url(
            self.metadata["authorization_endpoint"],
            code_verifier=self.code_verifier,
            nonce=self.nonce,
            **params,
        )
        return str(url)

    def browser_path(self, url: str) -> str:
        return url.removeprefix(self.server.base_url)

    def authorize(self, browser: Browser, **params: str) -> str:
        """Run the front channel in ``browser`` (already signed in), consenting if asked.

        Returns the redirect back to the client (its Location header).
        """
        response = browser.get(self.browser_path(self.authorization_url(**params)))
        if response.status_code == 200 and 'name="decision"' in response.text:
            form = hidden_fields(response.text)
            response = browser.post("/authorize", {**form, "decision": "allow"})
        assert response.status_code == 302, response.text
        location: str = response.headers["location"]
        return location

    def fetch_token(self, location: str) -> dict[str, Any]:
        token: dict[str, Any] = self.oauth.fetch_token(
            self.metadata["token_endpoint"],
            authorization_response=location,
            code_verifier=self.code_verifier,
        )
        return token

    def jwks(self) -> KeySet:
        return KeySet.import_key_set(httpx.get(self.metadata["jwks_uri"]).json())

    def validate_id_token(self, token: dict[str, Any]) -> dict[str, Any]:
        """Verify the ID token's signature with the published JWKS and its OIDC claims."""
        decoded = jwt.decode(
            token["id_token"],
            self.jwks(),
            algorithms=self.metadata["id_token_signing_alg_values_supported"],
        )
        claims = CodeIDToken(
            decoded.claims,
            decoded.header,
            options={"iss": {"values": [self.metadata["issuer"]]}},
            params={
                "nonce": self.nonce,
                "client_id": self.client.client_id,
                "access_token": token["access_token"],
            },
        )
        claims.validate(leeway=5)
        return dict(decoded.claims)


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden inputs of a form page (the consent page), HTML entities undone."""
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    fields["csrf_token"] = csrf_token(page)
    return {k: html.unescape(v) for k, v in fields.items()}


def sign_as_server(
    server: LiveServer,
    claims: dict[str, Any],
    header: dict[str, Any] | None = None,
    alg: str = "ES256",
) -> str:
    """Sign ``claims`` with the server's current key, to forge tokens with chosen claims."""
    from echo_identity.db import Database
    from echo_identity.idp.keys import SigningKeys
    from echo_identity.idp.provider import key_schedule
    from echo_identity.keys.kek_providers import keyring_factory

    settings = settings_for(server.env)
    database = Database(settings.database_url)
    try:
        key = SigningKeys(database, keyring_factory(settings), key_schedule(settings)).signing_key(
            alg
        )
        token: str = jwt.encode(
            {"alg": alg, "kid": key.kid, "typ": "at+jwt", **(header or {})},
            claims,
            key.key,
            algorithms=[alg],
        )
        return token
    finally:
        database.dispose()


def service_client(server: LiveServer, *extra: str) -> RegisteredClient:
    return register_client(
        server,
        "--name",
        "Service",
        "--grant-type",
        "client_credentials",
        "--scope",
        "api:read",
        *extra,
    )


def client_credentials_token(server: LiveServer, client: RegisteredClient) -> dict[str, Any]:
    response = httpx.post(
        f"{server.base_url}/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.client_secret or ""),
    )
    assert response.status_code == 200, response.text
    token: dict[str, Any] = response.json()
    return token


def log_audience(server: LiveServer) -> str:
    """The default audience of /log tokens (``ECHO_LOG_AUDIENCE`` unset)."""
    return server.env["ECHO_ISSUER"].rstrip("/") + "/log"


def log_client(
    server: LiveServer, scope: str = "logs:write", audience: str = ""
) -> RegisteredClient:
    """A service allowed to ship logs to /log (client_credentials, log audience)."""
    return register_client(
        server,
        "--name",
        "Billing service",
        "--grant-type",
        "client_credentials",
        "--scope",
        scope,
        "--audience",
        audience or log_audience(server),
    )
