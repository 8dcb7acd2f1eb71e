"""The steps both key-rotation tests take: a service and a resource server, a token before the
rotation, ``keys rotate``, and the key ids that tokens and /jwks carry."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
from joserfc import jws

from tests.support.oidc import (
    RegisteredClient,
    client_credentials_token,
    register_client,
    service_client,
)
from tests.support.server import LiveServer, run_cli


@dataclass(frozen=True)
class Rotation:
    client: RegisteredClient  # gets client-credentials tokens
    caller: RegisteredClient  # a resource server that verifies them
    old_token: str
    old_kid: str
    new_kid: str


def rotate_es256(server: LiveServer, audience: str) -> Rotation:
    """Take a token, then stage a new ES256 key with ``echo-identity keys rotate``."""
    client = service_client(server, "--audience", audience)
    caller = register_client(
        server, "--name", "RS", "--grant-type", "client_credentials", "--audience", audience
    )
    old_token = client_credentials_token(server, client)["access_token"]
    rotated = run_cli(server.env, "keys", "rotate", "--alg", "ES256", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = json.loads(rotated.stdout)["created"][0]["kid"]
    return Rotation(client, caller, old_token, token_kid(old_token), new_kid)


def token_kid(token: str) -> str:
    return str(jws.extract_compact(token.encode()).protected["kid"])


def published_kids(server: LiveServer) -> set[str]:
    return {k["kid"] for k in httpx.get(f"{server.base_url}/jwks").json()["keys"]}


def verify(server: LiveServer, caller: RegisteredClient, token: str) -> bool:
    """Whether /verify, called by ``caller``, says ``token`` is active."""
    answer = httpx.post(
        f"{server.base_url}/verify",
        data={"token": token},
        auth=(caller.client_id, caller.client_secret or ""),
    ).json()
    return answer.get("active") is True
