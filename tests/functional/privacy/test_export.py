"""GDPR export (issue 13, point 1): ``/account/export`` and ``users export`` give one JSON
document with the user's profile, sessions, applications, vault connections, consent records
and audit events, and no token, digest or secret."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import select

from echo_identity.accounts.models import User
from echo_identity.audit.events import EventType
from echo_identity.db import Database
from tests.factories import TestUser, create_user
from tests.functional.privacy.conftest import events_of, export_page, opened, pseudonym_of
from tests.support.credentials import SCOPE, hold_credentials
from tests.support.oidc import web_client
from tests.support.secret_scan import echo_shaped
from tests.support.server import LiveServer, run_cli
from tests.support.vault import (
    Upstream,
    fetch_vault_token,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)


def _secrets_of_a_user_with_everything(
    server: LiveServer, upstream: Upstream, user: TestUser
) -> tuple[Any, list[str]]:
    """Give ``user`` a vault connection, a consented client with tokens and a pending code,
    and a second browser session; returns a signed-in browser and every secret involved."""
    service = vault_service_client(server, upstream.name)  # before the user consents
    browser, _ = run_connect_flow(server, upstream, user)
    upstream_token = fetch_vault_token(
        server, vault_api_token(server, service), user.sub, upstream.name
    ).json()["access_token"]
    client = web_client(server)
    held = hold_credentials(server, client, user, user.password)
    with opened(server) as database, database.read_session() as session:
        password_hash = session.scalar(select(User.password_hash).where(User.id == user.id))
    secrets = [
        user.password,
        str(password_hash),
        upstream_token,
        held.token["access_token"],
        held.token["refresh_token"],
        held.token["id_token"],
        held.cookie,
        held.browser.session_digest(),
        browser.cookies[browser.session_cookie_name],
        browser.session_digest(),
        client.client_secret or "",
        service.client_secret or "",
        upstream.client.client_secret or "",
    ]
    return (browser, client), secrets


def test_export_holds_sessions_applications_vault_and_audit_events_and_no_secret(
    dev_server: LiveServer, upstream: Upstream, user: TestUser
) -> None:
    (browser, client), secrets = _secrets_of_a_user_with_everything(dev_server, upstream, user)

    response = export_page(browser, user.password)

    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-type"].startswith("application/json")
    assert "no-store" in response.headers["cache-control"]
    body = response.text
    for secret in secrets:
        assert secret not in body
    assert echo_shaped(body) == []
    assert pseudonym_of(dev_server, user.sub) not in body
    document = json.loads(body)
    assert document["profile"]["sub"] == user.sub
    assert document["profile"]["username"] == user.username
    assert "password_hash" not in document["profile"]
    assert len(document["sessions"]) == 2  # the connect flow's browser and hold_credentials'
    assert all(len(s["fingerprint"]) == 12 for s in document["sessions"])
    (application,) = document["applications"]
    assert application["client_id"] == client.client_id
    assert set(application["consented_scope"].split()) == set(SCOPE.split())
    (grant,) = application["grants"]
    assert grant["last_used_at"] is not None
    assert grant["revoked_at"] is None
    (connection,) = document["vault_connections"]
    assert (connection["provider"], connection["status"]) == (upstream.name, "active")
    (consent,) = document["vault_consents"]
    assert consent["provider"] == upstream.name
    assert consent["withdrawn_at"] is None
    types = [event["event_type"] for event in document["audit_events"]]
    for expected in (
        EventType.LOGIN_SUCCESS,
        EventType.VAULT_CONNECTION_CREATED,
        EventType.CONSENT_GRANTED,
        EventType.TOKEN_ISSUED,
        EventType.USER_EXPORTED,  # committed before the first byte was sent
    ):
        assert str(expected) in types
    assert {event["subject"] for event in document["audit_events"]} == {user.sub}
    ids = [event["id"] for event in document["audit_events"]]
    assert ids == sorted(ids)


def test_export_is_recorded_before_it_is_sent(
    dev_server: LiveServer, user: TestUser, dev_db: Database
) -> None:
    from tests.support.browser import Browser

    browser = Browser(dev_server)
    assert browser.login(user.username, user.password).status_code == 302
    database = dev_db
    before = {e.id for e in events_of(database, str(EventType.USER_EXPORTED))}
    assert export_page(browser, user.password).status_code == 200
    recorded = [e for e in events_of(database, str(EventType.USER_EXPORTED)) if e.id not in before]
    assert [(e.subject, e.details) for e in recorded] == [
        (pseudonym_of(dev_server, user.sub), {"via": "account"})
    ]


def test_cli_export_writes_the_document_to_a_file_only_its_owner_reads(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, tmp_path: Path, dev_db: Database
) -> None:
    _, secrets = _secrets_of_a_user_with_everything(dev_server, upstream, user)
    out = tmp_path / "export.json"

    result = run_cli(dev_server.env, "users", "export", user.username, "--out", str(out), "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sub"] == user.sub
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    body = out.read_text()
    for secret in secrets:
        assert secret not in body
    assert echo_shaped(body) == []
    document = json.loads(body)
    assert document["profile"]["sub"] == user.sub
    assert document["vault_connections"][0]["provider"] == upstream.name
    assert str(EventType.USER_EXPORTED) in {e["event_type"] for e in document["audit_events"]}
    exported = events_of(dev_db, str(EventType.USER_EXPORTED))
    assert any(
        e.subject == pseudonym_of(dev_server, user.sub) and e.actor == "cli" for e in exported
    )


def test_cli_export_by_sub_of_another_user_exports_only_that_user(
    dev_server: LiveServer, user: TestUser, tmp_path: Path
) -> None:
    other = create_user(dev_server.env["ECHO_DATABASE_URL"])
    out = tmp_path / "other.json"
    result = run_cli(dev_server.env, "users", "export", other.sub, "--out", str(out))
    assert result.returncode == 0, result.stderr
    body = out.read_text()
    assert json.loads(body)["profile"]["username"] == other.username
    assert user.sub not in body
    assert user.username not in body


def test_cli_export_of_an_unknown_user_exits_1_and_writes_nothing(
    dev_server: LiveServer, tmp_path: Path
) -> None:
    out = tmp_path / "nobody.json"
    for args in (["nobody-at-all"], ["nobody-at-all", "--json"]):
        result = run_cli(dev_server.env, "users", "export", *args, "--out", str(out))
        assert result.returncode == 1
        assert "No user has that subject or username" in result.stderr
        assert not out.exists()
    missing = run_cli(dev_server.env, "users", "export", "nobody-at-all")
    assert missing.returncode == 2  # --out is required
    assert "--out" in missing.stderr
