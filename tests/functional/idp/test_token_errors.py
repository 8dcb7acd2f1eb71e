"""Single-use codes, refresh rotation with reuse detection, and refusals at the token endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError
from sqlalchemy import select, update

from echo_identity.audit.models import AuditEvent
from echo_identity.crypto.digests import lookup_digest
from echo_identity.db import Database, utcnow
from echo_identity.idp.models import AuthorizationCode
from tests.factories import TestUser
from tests.support.browser import Browser
from tests.support.oidc import RelyingParty, query_of, web_client
from tests.support.server import LiveServer, run_cli


@pytest.fixture
def rp(dev_server: LiveServer) -> Iterator[RelyingParty]:
    party = RelyingParty(dev_server, web_client(dev_server), "openid offline_access")
    yield party
    party.close()


@pytest.fixture
def location(dev_server: LiveServer, user: TestUser, rp: RelyingParty) -> str:
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    return rp.authorize(browser)


@pytest.fixture
def database(dev_server: LiveServer) -> Iterator[Database]:
    db = Database(dev_server.env["ECHO_DATABASE_URL"])
    yield db
    db.dispose()


def _introspect(rp: RelyingParty, token: str) -> dict[str, object]:
    answer: dict[str, object] = rp.oauth.introspect_token(
        rp.metadata["introspection_endpoint"], token=token
    ).json()
    return answer


def _events(database: Database, event_type: str, client_id: str) -> list[AuditEvent]:
    with database.session() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.event_type == event_type, AuditEvent.client_id == client_id
                )
            )
        )


def _token_request(rp: RelyingParty, **form: str) -> httpx.Response:
    return httpx.post(
        rp.metadata["token_endpoint"],
        data=form,
        auth=(rp.client.client_id, rp.client.client_secret or ""),
    )


def test_second_redemption_of_a_code_fails_and_revokes_the_tokens_it_produced(
    rp: RelyingParty, location: str, database: Database
) -> None:
    token = rp.fetch_token(location)
    assert _introspect(rp, token["access_token"])["active"] is True
    again = _token_request(
        rp,
        grant_type="authorization_code",
        code=query_of(location)["code"],
        redirect_uri=rp.oauth.redirect_uri,
        code_verifier=rp.code_verifier,
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert _introspect(rp, token["access_token"]) == {"active": False}
    assert _introspect(rp, token["refresh_token"]) == {"active": False}
    reuse = _events(database, "oauth.code.reuse_detected", rp.client.client_id)
    assert [e.severity for e in reuse] == ["high"]


def test_reused_refresh_token_revokes_the_whole_family(
    rp: RelyingParty, location: str, database: Database
) -> None:
    first = rp.fetch_token(location)
    second = rp.oauth.refresh_token(
        rp.metadata["token_endpoint"], refresh_token=first["refresh_token"]
    )
    third = rp.oauth.refresh_token(
        rp.metadata["token_endpoint"], refresh_token=second["refresh_token"]
    )
    stolen = _token_request(rp, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    for token in (third["access_token"], third["refresh_token"], second["access_token"]):
        assert _introspect(rp, token) == {"active": False}
    legit = _token_request(rp, grant_type="refresh_token", refresh_token=third["refresh_token"])
    assert legit.status_code == 400
    events = _events(database, "oauth.token.reuse_detected", rp.client.client_id)
    assert [e.severity for e in events] == ["high"]
    assert events[0].token_fingerprint is not None
    assert first["refresh_token"] not in str(events[0].details)


def test_expired_code_is_refused(rp: RelyingParty, location: str, database: Database) -> None:
    with database.transaction() as session:
        session.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.code_digest == lookup_digest(query_of(location)["code"]))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with pytest.raises(OAuthError) as refused:
        rp.fetch_token(location)
    assert refused.value.error == "invalid_grant"


def test_wrong_code_verifier_is_refused(rp: RelyingParty, location: str) -> None:
    rp.code_verifier = "x" * 50
    with pytest.raises(OAuthError) as refused:
        rp.fetch_token(location)
    assert refused.value.error == "invalid_grant"


def test_missing_code_verifier_is_refused(rp: RelyingParty, location: str) -> None:
    response = _token_request(
        rp,
        grant_type="authorization_code",
        code=query_of(location)["code"],
        redirect_uri=rp.oauth.redirect_uri,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_redirect_uri_different_from_the_authorization_request_is_refused(
    rp: RelyingParty, location: str
) -> None:
    response = _token_request(
        rp,
        grant_type="authorization_code",
        code=query_of(location)["code"],
        redirect_uri="http://127.0.0.1:9/other",
        code_verifier=rp.code_verifier,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_code_is_bound_to_its_client(
    dev_server: LiveServer, rp: RelyingParty, location: str
) -> None:
    other = RelyingParty(dev_server, web_client(dev_server), "openid")
    try:
        response = httpx.post(
            rp.metadata["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": query_of(location)["code"],
                "redirect_uri": rp.oauth.redirect_uri,
                "code_verifier": rp.code_verifier,
            },
            auth=(other.client.client_id, other.client.client_secret or ""),
        )
    finally:
        other.close()
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_refused_and_audited(rp: RelyingParty, database: Database) -> None:
    response = httpx.post(
        rp.metadata["token_endpoint"],
        data={"grant_type": "client_credentials"},
        auth=(rp.client.client_id, "wrong-secret"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    failures = _events(database, "oauth.token.failed", rp.client.client_id)
    assert failures
    assert failures[-1].details["error"] == "invalid_client"


def test_disabled_client_is_refused_at_token_and_introspect(
    dev_server: LiveServer, rp: RelyingParty, location: str
) -> None:
    token = rp.fetch_token(location)
    assert run_cli(dev_server.env, "clients", "disable", rp.client.client_id).returncode == 0
    dev_server.advance(1.0)  # another process's change reaches every worker within a second
    refresh = _token_request(rp, grant_type="refresh_token", refresh_token=token["refresh_token"])
    assert refresh.status_code == 401
    introspect = rp.oauth.introspect_token(
        rp.metadata["introspection_endpoint"], token=token["access_token"]
    )
    assert introspect.status_code == 401


def test_public_client_without_offline_access_gets_no_refresh_token(
    dev_server: LiveServer, user: TestUser
) -> None:
    public = web_client(dev_server, "--public")
    assert public.client_secret is None
    party = RelyingParty(dev_server, public, "openid")
    try:
        browser = Browser(dev_server)
        browser.login(user.username, user.password)
        token = party.fetch_token(party.authorize(browser))
    finally:
        party.close()
    assert "access_token" in token
    assert "refresh_token" not in token
