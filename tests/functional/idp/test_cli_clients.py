"""``echo-identity clients``: secrets shown once, stored only as keyed digests."""

from __future__ import annotations

import json

from sqlalchemy import select

from echo_identity.db import Database
from echo_identity.idp.models import OAuthClient
from tests.support.oidc import cli_register_client
from tests.support.server import LiveServer, run_cli


def test_create_prints_the_secret_once_and_stores_only_a_digest(dev_server: LiveServer) -> None:
    created = cli_register_client(
        dev_server,
        "--name",
        "Shop",
        "--redirect-uri",
        "https://shop.example/cb",
        "--id-token-alg",
        "ES256",
    )
    assert created.client_secret
    database = Database(dev_server.env["ECHO_DATABASE_URL"])
    with database.session() as session:
        row = session.scalar(select(OAuthClient).where(OAuthClient.client_id == created.client_id))
    database.dispose()
    assert row is not None
    assert row.secret_digest is not None
    assert created.client_secret not in row.secret_digest
    assert len(row.secret_digest) == 64
    listing = run_cli(dev_server.env, "clients", "list", "--json")
    assert created.client_secret not in listing.stdout
    ids = [c["client_id"] for c in json.loads(listing.stdout)["clients"]]
    assert created.client_id in ids


def test_public_client_gets_no_secret(dev_server: LiveServer) -> None:
    created = cli_register_client(
        dev_server, "--name", "SPA", "--public", "--redirect-uri", "http://localhost:5173/cb"
    )
    assert created.client_secret is None
    assert created.raw["public"] is True


def test_insecure_redirect_uri_is_refused_with_a_stable_code(dev_server: LiveServer) -> None:
    result = run_cli(
        dev_server.env,
        "clients",
        "create",
        "--name",
        "Bad",
        "--redirect-uri",
        "http://shop.example/cb",
        "--json",
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "invalid_redirect_uri"


def test_disable_unknown_client_says_so(dev_server: LiveServer) -> None:
    result = run_cli(dev_server.env, "clients", "disable", "nope", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "unknown_client"
