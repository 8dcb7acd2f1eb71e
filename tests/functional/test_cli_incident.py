"""The commands docs/incident-response.md relies on, proven by their effect on a running server:
``clients rotate-secret`` (old secret refused at /token), ``clients revoke-tokens`` (every grant
of the client inactive), ``keys rotate --retire-now`` (old kid gone from /jwks, its tokens
refused) and ``audit export --user`` (one user's evidence, nobody else's)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from echo_identity.audit.events import EventType
from echo_identity.audit.models import AuditEvent
from echo_identity.db import Database
from echo_identity.idp.keys import RELOAD_SECONDS
from tests.factories import TestUser, audit_trail, create_user, record_event
from tests.support.clock import MovableClock
from tests.support.credentials import (
    Held,
    assert_alive,
    hold_credentials,
    introspect,
    redeem,
    refresh,
    userinfo,
    verify,
)
from tests.support.environment import app_environment, settings_for
from tests.support.key_rotation import published_kids, token_kid
from tests.support.oidc import (
    client_credentials_token,
    register_client,
    service_client,
    web_client,
)
from tests.support.secret_scan import is_well_formed
from tests.support.server import LiveServer, run_cli, start_server


def _cli_json(server: LiveServer, *args: str) -> dict[str, object]:
    result = run_cli(server.env, *args, "--json")
    assert result.returncode == 0, result.stderr
    payload: dict[str, object] = json.loads(result.stdout)
    return payload


def _events(server: LiveServer, event_type: EventType) -> list[AuditEvent]:
    database = Database(server.env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            return list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.event_type == str(event_type))
                    .order_by(AuditEvent.id)
                )
            )
    finally:
        database.dispose()


def _token_status(server: LiveServer, client_id: str, secret: str) -> int:
    return httpx.post(
        f"{server.base_url}/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
    ).status_code


# --- clients rotate-secret ------------------------------------------------------------------


def test_rotate_secret_refuses_the_old_secret_at_token_and_accepts_the_new_one(
    dev_server: LiveServer,
) -> None:
    client = service_client(dev_server)
    old = client.client_secret or ""
    assert _token_status(dev_server, client.client_id, old) == 200
    rotated = _cli_json(dev_server, "clients", "rotate-secret", client.client_id)
    new = str(rotated["client_secret"])
    assert is_well_formed(new, "cs")
    assert new != old
    dev_server.advance(1.0)  # the server keeps a client for up to a second
    assert _token_status(dev_server, client.client_id, old) == 401
    assert _token_status(dev_server, client.client_id, new) == 200
    assert [e.client_id for e in _events(dev_server, EventType.CLIENT_SECRET_ROTATED)][-1] == (
        client.client_id
    )
    listing = run_cli(dev_server.env, "clients", "list", "--json")
    assert new not in listing.stdout
    assert all(
        new not in json.dumps(e.details)
        for e in _events(dev_server, EventType.CLIENT_SECRET_ROTATED)
    )


def test_rotate_secret_of_an_unknown_or_public_client_fails_with_a_stable_code(
    dev_server: LiveServer,
) -> None:
    public = register_client(
        dev_server, "--name", "SPA", "--public", "--redirect-uri", "http://localhost:5173/cb"
    )
    for client_id, code in (
        ("nope", "unknown_client"),
        (public.client_id, "invalid_client_metadata"),
    ):
        result = run_cli(dev_server.env, "clients", "rotate-secret", client_id, "--json")
        assert result.returncode == 1
        assert json.loads(result.stdout)["error"] == code


# --- clients revoke-tokens ------------------------------------------------------------------


def test_revoke_tokens_ends_every_grant_of_the_client_and_no_other_clients(
    dev_server: LiveServer, user: TestUser
) -> None:
    leaked, bystander = web_client(dev_server), web_client(dev_server)
    held: Held = hold_credentials(dev_server, leaked, user, user.password)
    other_user = create_user(dev_server.env["ECHO_DATABASE_URL"])
    also_held = hold_credentials(dev_server, leaked, other_user, other_user.password)
    kept = hold_credentials(dev_server, bystander, user, user.password)

    revoked = _cli_json(dev_server, "clients", "revoke-tokens", leaked.client_id)
    assert revoked["revoked"] == {"token_families": 2, "authorization_codes": 2}

    for holding in (held, also_held):
        access, refresh_token = holding.token["access_token"], holding.token["refresh_token"]
        verified = verify(dev_server, leaked, access)
        assert (verified.status_code, verified.json()["error"]) == (401, "token_revoked")
        assert introspect(dev_server, leaked, access) == {"active": False}
        assert introspect(dev_server, leaked, refresh_token) == {"active": False}
        assert refresh(dev_server, leaked, refresh_token).json()["error"] == "invalid_grant"
        assert userinfo(dev_server, access).status_code == 401
        redeemed = redeem(holding.pending, holding.pending_location)
        assert redeemed.json()["error"] == "invalid_grant"
    assert_alive(dev_server, bystander, kept)
    [event] = [
        e
        for e in _events(dev_server, EventType.CLIENT_TOKENS_REVOKED)
        if e.client_id == leaked.client_id
    ]
    assert (event.actor, event.details["token_families"]) == ("cli", 2)


def test_revoke_tokens_refuses_the_client_credentials_tokens_issued_before_it(
    dev_server: LiveServer,
) -> None:
    audience = "api://leak-drill"
    leaked = service_client(dev_server, "--audience", audience)
    other = service_client(dev_server, "--audience", audience)
    caller = register_client(
        dev_server, "--name", "RS", "--grant-type", "client_credentials", "--audience", audience
    )
    minted = client_credentials_token(dev_server, leaked)["access_token"]
    kept = client_credentials_token(dev_server, other)["access_token"]
    assert verify(dev_server, caller, minted).json()["active"] is True

    _cli_json(dev_server, "clients", "revoke-tokens", leaked.client_id)
    dev_server.advance(1.0)  # the server keeps a client for up to a second

    refused = verify(dev_server, caller, minted)
    assert (refused.status_code, refused.json()["error"]) == (401, "token_revoked")
    assert introspect(dev_server, leaked, minted) == {"active": False}
    assert verify(dev_server, caller, kept).json()["active"] is True  # another client's
    time.sleep(1.0)  # tokens issued in the cut-off's own second are refused too
    fresh = client_credentials_token(dev_server, leaked)["access_token"]
    assert verify(dev_server, caller, fresh).json()["active"] is True


def test_revoke_tokens_of_an_unknown_client_fails_and_changes_nothing(
    dev_server: LiveServer,
) -> None:
    before = len(_events(dev_server, EventType.CLIENT_TOKENS_REVOKED))
    result = run_cli(dev_server.env, "clients", "revoke-tokens", "nope", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "unknown_client"
    assert len(_events(dev_server, EventType.CLIENT_TOKENS_REVOKED)) == before


# --- keys rotate --retire-now ---------------------------------------------------------------


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def own_server(tmp_path: Path, database_url: str, clock: MovableClock) -> Iterator[LiveServer]:
    """A server of its own: retiring keys must not pull them from under other tests."""
    env = app_environment(tmp_path / "var", database_url)
    live = start_server(env, tmp_path / "server.log", clock=clock)
    yield live
    live.stop()


def test_retire_now_removes_the_old_key_from_jwks_and_its_tokens_stop_verifying(
    own_server: LiveServer, clock: MovableClock
) -> None:
    audience = "api://incident"
    client = service_client(own_server, "--audience", audience)
    caller = register_client(
        own_server, "--name", "RS", "--grant-type", "client_credentials", "--audience", audience
    )
    old_token = client_credentials_token(own_server, client)["access_token"]
    old_kid = token_kid(old_token)
    assert old_kid in published_kids(own_server)
    assert verify(own_server, caller, old_token).json()["active"] is True

    rotated = _cli_json(own_server, "keys", "rotate", "--alg", "ES256", "--retire-now")
    assert rotated["retired"] == [{"kid": old_kid, "alg": "ES256"}]
    [created] = rotated["created"]  # type: ignore[misc]
    clock.advance(RELOAD_SECONDS + 1)  # every server rereads its key table this often

    published = published_kids(own_server)
    assert old_kid not in published
    assert created["kid"] in published
    refused = verify(own_server, caller, old_token)
    assert refused.json()["active"] is False
    assert introspect(own_server, caller, old_token) == {"active": False}
    new_token = client_credentials_token(own_server, client)["access_token"]
    assert token_kid(new_token) == created["kid"]  # signs at once, nothing staged
    assert verify(own_server, caller, new_token).json()["active"] is True
    retired = [e.details for e in _events(own_server, EventType.KEY_RETIRED)]
    assert retired == [{"kid": old_kid, "alg": "ES256"}]
    listed = _cli_json(own_server, "keys", "list")
    assert old_kid not in json.dumps(listed)


# --- audit export --user --------------------------------------------------------------------


def test_audit_export_for_one_user_holds_their_events_and_no_one_elses(
    dev_server: LiveServer, tmp_path: Path
) -> None:
    settings = settings_for(dev_server.env)
    database_url = dev_server.env["ECHO_DATABASE_URL"]
    victim, bystander = create_user(database_url), create_user(database_url)
    for someone in (victim, bystander, victim):
        record_event(settings, EventType.LOGIN_SUCCESS, user=someone.sub)
    pseudonyms = audit_trail(settings).pseudonyms
    for chosen in (victim.username, victim.sub):
        out = tmp_path / f"{chosen}.jsonl"
        exported = _cli_json(
            dev_server, "audit", "export", "--since", "1h", "--user", chosen, "--out", str(out)
        )
        assert exported["exported"] == 2
        assert exported["subject"] == pseudonyms.of(victim.sub)
        text = out.read_text()
        assert len(text.splitlines()) == 2
        assert pseudonyms.of(victim.sub) in text
        assert pseudonyms.of(bystander.sub) not in text


def test_audit_export_for_one_client_holds_its_events_only(
    dev_server: LiveServer, tmp_path: Path
) -> None:
    leaked, other = service_client(dev_server), service_client(dev_server)
    for client in (leaked, other, leaked):
        client_credentials_token(dev_server, client)
    out = tmp_path / "client.jsonl"
    exported = _cli_json(
        dev_server,
        "audit",
        "export",
        "--since",
        "1h",
        "--client",
        leaked.client_id,
        "--out",
        str(out),
    )
    documents = [json.loads(line) for line in out.read_text().splitlines()]
    # client.created and two token.issued
    assert exported["exported"] == len(documents) == 3
    assert {d["actor"]["app_uid"] for d in documents} == {leaked.client_id}


def test_audit_export_for_an_unknown_user_fails_with_a_stable_code(
    dev_server: LiveServer, tmp_path: Path
) -> None:
    out = tmp_path / "none.jsonl"
    result = run_cli(
        dev_server.env, "audit", "export", "--user", "nobody-at-all", "--out", str(out), "--json"
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "unknown_user"
    assert not out.exists()
