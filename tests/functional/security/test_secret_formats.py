"""Issue 10 finding 11: Echo's own secrets are recognisable, and /log never stores them verbatim.

Every secret Echo mints carries ``echo_<kind>_`` and a CRC32 checksum (docs/oidc.md "Secret
formats"); the format is checked here with the test-side scanner (``tests/support/secret_scan``),
not with the module under test. Values minted before the format keep working.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from typing import Any

import httpx
from sqlalchemy import select, update

from echo_identity.audit.log_models import ApplicationLog
from echo_identity.crypto.digests import fingerprint, keyed_digest, lookup_digest
from echo_identity.db import Database
from echo_identity.idp.clients import client_digest_key
from echo_identity.idp.models import OAuthClient, RefreshToken
from echo_identity.services import session_store
from tests.factories import TestUser, create_user
from tests.support.browser import Browser
from tests.support.environment import settings_for
from tests.support.oidc import (
    RegisteredClient,
    RelyingParty,
    client_credentials_token,
    log_client,
    query_of,
    web_client,
)
from tests.support.secret_scan import echo_shaped, is_well_formed
from tests.support.server import LiveServer


@dataclass
class CodeFlow:
    """One user's run of the code flow and the secrets it handed out."""

    user: TestUser
    browser: Browser
    client: RegisteredClient
    code: str
    token: dict[str, Any]

    @property
    def session_cookie(self) -> str:
        return self.browser.cookies[self.browser.session_cookie_name]


def run_code_flow(server: LiveServer) -> CodeFlow:
    user = create_user(server.env["ECHO_DATABASE_URL"])
    browser = Browser(server)
    assert browser.login(user.username, user.password).status_code == 302
    client = web_client(server)
    rp = RelyingParty(server, client, "openid offline_access")
    try:
        location = rp.authorize(browser)
        token = rp.fetch_token(location)
    finally:
        rp.close()
    return CodeFlow(user, browser, client, query_of(location)["code"], token)


def refresh(server: LiveServer, client_id: str, client_secret: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        auth=(client_id, client_secret),
        timeout=10,
    )


def masked(value: str) -> str:
    return f"sha256:{fingerprint(value)}"


def stored_logs(server: LiveServer, source: str) -> str:
    """Message and fields of every /log row of ``source``, as one text."""
    database = Database(settings_for(server.env).database_url)
    try:
        with database.session() as session:
            rows = session.execute(
                select(ApplicationLog.message, ApplicationLog.fields).where(
                    ApplicationLog.source == source
                )
            ).all()
    finally:
        database.dispose()
    return "\n".join(f"{message}\n{json.dumps(fields)}" for message, fields in rows)


def test_every_minted_secret_has_its_kind_prefix_and_a_valid_checksum(
    dev_server: LiveServer,
) -> None:
    flow = run_code_flow(dev_server)
    rotated = refresh(
        dev_server,
        flow.client.client_id,
        flow.client.client_secret or "",
        flow.token["refresh_token"],
    )
    assert rotated.status_code == 200, rotated.text

    minted = {
        "cs": flow.client.client_secret or "",
        "ac": flow.code,
        "rt": flow.token["refresh_token"],
        "ss": flow.session_cookie,
    }
    assert {kind: is_well_formed(value, kind) for kind, value in minted.items()} == dict.fromkeys(
        minted, True
    )
    assert is_well_formed(rotated.json()["refresh_token"], "rt")
    # A client_credentials client's secret is minted by the same registry.
    service = log_client(dev_server)
    assert is_well_formed(service.client_secret or "", "cs")


def test_secrets_a_service_logs_through_log_are_stored_only_as_fingerprints(
    dev_server: LiveServer,
) -> None:
    flow = run_code_flow(dev_server)
    refresh_token, client_secret = flow.token["refresh_token"], flow.client.client_secret or ""
    code, session_id, password = flow.code, flow.session_cookie, flow.user.password
    sender = log_client(dev_server)
    bearer = client_credentials_token(dev_server, sender)["access_token"]
    body = [
        {
            "level": "error",
            # No key=value, no "Bearer": the values themselves have to be recognised.
            "message": f"refresh with {refresh_token} failed for client {client_secret}; code "
            f"{code} replayed from session {session_id}; login failed for "
            f"{flow.user.username} with password {password}",
        },
        {
            "level": "info",
            "message": "retrying",
            "fields": {
                "note": refresh_token,
                "attempts": [client_secret, f"code({code})"],
                "by_session": {session_id: "seen"},
            },
        },
    ]

    shipped = httpx.post(
        f"{dev_server.base_url}/log",
        headers={"Authorization": f"Bearer {bearer}"},
        json=body,
        timeout=10,
    )

    assert shipped.status_code == 201, shipped.text
    stored = stored_logs(dev_server, sender.client_id)
    leaked = {
        name: value[:12] + "…"
        for name, value in {
            "refresh token": refresh_token,
            "client secret": client_secret,
            "authorization code": code,
            "session id": session_id,
            "password": password,
        }.items()
        if value in stored
    }
    assert leaked == {}
    # The rows are there, traceable by the fingerprints audit events use.
    for value in (refresh_token, client_secret, code, session_id):
        assert masked(value) in stored
    assert "with password [REDACTED]" in stored
    assert echo_shaped(stored) == []


def test_old_format_refresh_token_client_secret_and_session_keep_working(
    dev_server: LiveServer,
) -> None:
    # Values minted before the format (plain token_urlsafe) are stored the old way; lookup is by
    # digest of the whole string, so they must keep working until they expire.
    flow = run_code_flow(dev_server)
    old_secret, old_refresh, old_session = (secrets.token_urlsafe(32) for _ in range(3))
    settings = settings_for(dev_server.env)
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            session.execute(
                update(OAuthClient)
                .where(OAuthClient.client_id == flow.client.client_id)
                .values(
                    secret_digest=keyed_digest(
                        client_digest_key(settings.secret_key_bytes()), old_secret
                    )
                )
            )
            moved = session.execute(
                update(RefreshToken)
                .where(RefreshToken.token_digest == lookup_digest(flow.token["refresh_token"]))
                .values(token_digest=lookup_digest(old_refresh))
            )
            assert moved.rowcount == 1  # type: ignore[attr-defined]
            session.commit()
        store = session_store(settings, database)
        record = store.get(flow.browser.session_digest())
        assert record is not None
        store.put(replace(record, sid=lookup_digest(old_session)))
        store.delete(record.sid)
    finally:
        database.dispose()
    dev_server.advance(1.0)  # the app keeps a client's secret digest for up to a second

    # The new-format secret no longer matches: the old one is really what authenticates.
    new_secret = flow.client.client_secret or ""
    assert refresh(dev_server, flow.client.client_id, new_secret, old_refresh).status_code == 401
    refreshed = refresh(dev_server, flow.client.client_id, old_secret, old_refresh)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != old_refresh

    flow.browser.cookies[flow.browser.session_cookie_name] = old_session
    account = flow.browser.get("/account")
    assert account.status_code == 200
    assert flow.user.username in account.text
