"""One authorization decision for every bearer API (issue 10 findings 1, 12 and 13's min_ttl).

Attacks, each against a real server: another user's token, a token for another audience, a
service registered after the user consented, a user token at a services-only API, floods of
refused calls, and hostile JSON bodies at the vault token call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from echo_identity.audit.models import AuditEvent, AuditPseudonym
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.db import Database, utcnow
from echo_identity.vault.models import Connection, ConnectionConsent
from tests.factories import TestUser, create_user
from tests.support.browser import Browser
from tests.support.oidc import (
    RegisteredClient,
    RelyingParty,
    client_credentials_token,
    register_client,
    sign_as_server,
    web_client,
)
from tests.support.server import LiveServer
from tests.support.vault import (
    Upstream,
    fetch_vault_token,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)


def new_user(server: LiveServer) -> TestUser:
    return create_user(server.env["ECHO_DATABASE_URL"])


def issuer(server: LiveServer) -> str:
    return server.env["ECHO_ISSUER"].rstrip("/")


def claims_of(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def user_access_token(
    server: LiveServer, client: RegisteredClient, user: TestUser, scope: str
) -> str:
    """An access token issued to ``user`` through the code flow (PKCE, consent)."""
    rp = RelyingParty(server, client, scope)
    try:
        browser = Browser(server)
        browser.login(user.username, user.password)
        token: str = rp.fetch_token(rp.authorize(browser))["access_token"]
        return token
    finally:
        rp.close()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def connections_url(server: LiveServer, sub: str, provider: str | None = None) -> str:
    tail = f"/{provider}" if provider else ""
    return f"{server.base_url}/api/v1/users/{sub}/connections{tail}"


def count_rows(server: LiveServer) -> tuple[int, int]:
    """(audit events, pseudonym map rows) in the server's database."""
    database = Database(server.env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            events = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
            pseudonyms = session.scalar(select(func.count()).select_from(AuditPseudonym)) or 0
            return int(events), int(pseudonyms)
    finally:
        database.dispose()


def events_of(server: LiveServer, event_type: str, **where: Any) -> list[AuditEvent]:
    database = Database(server.env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            statement = select(AuditEvent).where(AuditEvent.event_type == event_type)
            for column, value in where.items():
                statement = statement.where(getattr(AuditEvent, column) == value)
            return list(session.scalars(statement.order_by(AuditEvent.id)))
    finally:
        database.dispose()


def pseudonym(server: LiveServer, sub: str) -> str:
    return Pseudonyms.from_secret(server.env["ECHO_SECRET_KEY"].encode()).of(sub)


# --- finding 1: subject binding ---------------------------------------------------------------


def test_alices_token_gets_403_for_bobs_connection_and_still_gets_her_own(
    dev_server: LiveServer, upstream: Upstream
) -> None:
    app = web_client(
        dev_server, "--scope", "openid vault:read vault:revoke", "--vault-provider", upstream.name
    )
    alice, bob = new_user(dev_server), new_user(dev_server)
    run_connect_flow(dev_server, upstream, alice)
    _, bobs_upstream_account = run_connect_flow(dev_server, upstream, bob)
    alices_token = user_access_token(dev_server, app, alice, "openid vault:read vault:revoke")
    assert claims_of(alices_token)["sub"] == alice.sub

    stolen = fetch_vault_token(dev_server, alices_token, bob.sub, upstream.name)
    listed = httpx.get(connections_url(dev_server, bob.sub), headers=bearer(alices_token))
    deleted = httpx.delete(
        connections_url(dev_server, bob.sub, upstream.name), headers=bearer(alices_token)
    )
    for response in (stolen, listed, deleted):
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "access_denied"
        assert "access_token" not in response.json()
        for secret in (bob.sub, bob.username, bobs_upstream_account.username):
            assert secret not in response.text
    database = Database(dev_server.env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            assert session.scalar(select(Connection).where(Connection.user_id == bob.id))
    finally:
        database.dispose()
    [denied] = events_of(dev_server, "vault.token.denied", client_id=app.client_id)[:1]
    assert denied.details["error"] == "access_denied"
    assert denied.subject == pseudonym(dev_server, bob.sub)  # whose data was aimed at

    own = fetch_vault_token(dev_server, alices_token, alice.sub, upstream.name)
    assert own.status_code == 200, own.text
    assert upstream.introspect(own.json()["access_token"])["active"] is True
    mine = httpx.get(connections_url(dev_server, alice.sub), headers=bearer(alices_token))
    assert [c["provider"] for c in mine.json()["connections"]] == [upstream.name]


def test_a_service_reaches_only_users_whose_consent_names_it_until_they_reconnect(
    dev_server: LiveServer, upstream: Upstream
) -> None:
    early = vault_service_client(dev_server, upstream.name)
    user = new_user(dev_server)
    browser = Browser(dev_server)
    browser.login(user.username, user.password)
    page = browser.get(f"/connections/{upstream.name}/connect").text
    assert "Who receives the token" in page
    assert early.client_id in page
    run_connect_flow(dev_server, upstream, user)
    late = vault_service_client(dev_server, upstream.name)  # registered after the consent
    early_token, late_token = vault_api_token(dev_server, early), vault_api_token(dev_server, late)

    assert fetch_vault_token(dev_server, early_token, user.sub, upstream.name).status_code == 200
    refused = fetch_vault_token(dev_server, late_token, user.sub, upstream.name)
    assert (refused.status_code, refused.json()["error"]) == (403, "access_denied")
    listed = httpx.get(connections_url(dev_server, user.sub), headers=bearer(late_token))
    assert listed.status_code == 403

    run_connect_flow(dev_server, upstream, user)  # the page now names both services
    assert fetch_vault_token(dev_server, late_token, user.sub, upstream.name).status_code == 200
    database = Database(dev_server.env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            consents = session.scalars(
                select(ConnectionConsent)
                .where(ConnectionConsent.user_id == user.id)
                .order_by(ConnectionConsent.id)
            ).all()
    finally:
        database.dispose()
    assert [sorted(c.client_ids) for c in consents] == [
        [early.client_id],
        sorted([early.client_id, late.client_id]),
    ]
    assert consents[0].withdrawn_at is not None  # the fresh consent replaced it
    assert consents[1].withdrawn_at is None


def test_a_service_cannot_tell_unknown_users_from_users_it_may_not_touch(
    dev_server: LiveServer, upstream: Upstream
) -> None:
    service = vault_service_client(dev_server, upstream.name)
    consented, not_connected = new_user(dev_server), new_user(dev_server)
    run_connect_flow(dev_server, upstream, consented)
    other_service = vault_service_client(dev_server, upstream.name)
    connected_elsewhere = new_user(dev_server)
    run_connect_flow(dev_server, upstream, connected_elsewhere)  # names both services
    token = vault_api_token(dev_server, other_service)
    # other_service is named by connected_elsewhere's consent only.
    assert (
        fetch_vault_token(dev_server, token, connected_elsewhere.sub, upstream.name).status_code
        == 200
    )
    # Control: the service the consent names does reach that user.
    reached = fetch_vault_token(
        dev_server, vault_api_token(dev_server, service), consented.sub, upstream.name
    )
    assert reached.status_code == 200
    answers = set()
    for sub in (consented.sub, not_connected.sub, "no-such-user-" + secrets.token_hex(8)):
        for response in (
            fetch_vault_token(dev_server, token, sub, upstream.name),
            httpx.get(connections_url(dev_server, sub), headers=bearer(token)),
        ):
            body = response.json()
            answers.add((response.status_code, body["error"], body["error_description"]))
    assert answers == {
        (
            403,
            "access_denied",
            "This access token may not use that user's connection to that provider.",
        )
    }


# --- audiences ----------------------------------------------------------------------------------


def test_a_token_for_another_audience_gets_401_invalid_token_at_every_bearer_api(
    dev_server: LiveServer, upstream: Upstream
) -> None:
    billing = register_client(
        dev_server,
        "--name",
        "Billing",
        "--grant-type",
        "client_credentials",
        "--scope",
        "vault:read vault:revoke audit:read logs:write",
        "--audience",
        "api://billing",
        "--vault-provider",
        upstream.name,
    )
    user = new_user(dev_server)
    run_connect_flow(dev_server, upstream, user)  # billing is registered: the consent names it
    token = client_credentials_token(dev_server, billing)["access_token"]
    assert claims_of(token)["aud"] == "api://billing"
    calls = {
        "fetch": lambda: fetch_vault_token(dev_server, token, user.sub, upstream.name),
        "list": lambda: httpx.get(connections_url(dev_server, user.sub), headers=bearer(token)),
        "delete": lambda: httpx.delete(
            connections_url(dev_server, user.sub, upstream.name), headers=bearer(token)
        ),
        "events": lambda: httpx.get(
            f"{dev_server.base_url}/api/v1/audit/events", headers=bearer(token)
        ),
        "log": lambda: httpx.post(
            f"{dev_server.base_url}/log", headers=bearer(token), json={"message": "hi"}
        ),
        "userinfo": lambda: httpx.get(f"{dev_server.base_url}/userinfo", headers=bearer(token)),
    }
    for name, call in calls.items():
        response = call()
        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"] == "invalid_token", name
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"', name
    # /userinfo: an openid token of a real user, signed by us, but for another audience.
    now = int(time.time())
    forged = {
        "iss": dev_server.env["ECHO_ISSUER"],
        "sub": user.sub,
        "client_id": billing.client_id,
        "scope": "openid",
        "iat": now,
        "exp": now + 300,
        "jti": secrets.token_hex(16),
    }
    elsewhere = sign_as_server(dev_server, {**forged, "aud": "api://billing"})
    response = httpx.get(f"{dev_server.base_url}/userinfo", headers=bearer(elsewhere))
    assert (response.status_code, response.json()["error"]) == (401, "invalid_token")
    # Control: the same claims for the userinfo audience are accepted.
    genuine = sign_as_server(
        dev_server,
        {**forged, "jti": secrets.token_hex(16), "aud": issuer(dev_server) + "/userinfo"},
    )
    assert httpx.get(f"{dev_server.base_url}/userinfo", headers=bearer(genuine)).status_code == 200
    # The refused DELETE left the connection alone.
    database = Database(dev_server.env["ECHO_DATABASE_URL"])
    try:
        with database.session() as session:
            assert session.scalar(select(Connection).where(Connection.user_id == user.id))
    finally:
        database.dispose()


def test_minted_access_tokens_name_the_apis_their_scope_calls_for(dev_server: LiveServer) -> None:
    api, log, userinfo = (issuer(dev_server) + path for path in ("/api/v1", "/log", "/userinfo"))

    def minted(*args: str) -> tuple[RegisteredClient, dict[str, Any]]:
        client = register_client(
            dev_server, "--name", "S", "--grant-type", "client_credentials", *args
        )
        return client, claims_of(client_credentials_token(dev_server, client)["access_token"])

    plain, claims = minted("--scope", "api:read")
    assert claims["aud"] == plain.client_id
    both, claims = minted("--scope", "vault:read logs:write")
    assert claims["aud"] == [both.client_id, api, log]
    auditor, claims = minted("--scope", "audit:read")
    assert claims["aud"] == [auditor.client_id, api]
    _, claims = minted("--scope", "vault:read logs:write", "--audience", "api://billing")
    assert claims["aud"] == "api://billing"  # registered audiences: exactly those

    app = web_client(dev_server, "--scope", "openid profile")
    rp = RelyingParty(dev_server, app, "openid profile")
    try:
        browser = Browser(dev_server)
        user = new_user(dev_server)
        browser.login(user.username, user.password)
        tokens = rp.fetch_token(rp.authorize(browser))
        assert claims_of(tokens["access_token"])["aud"] == [app.client_id, userinfo]
        assert rp.validate_id_token(tokens)["aud"] == app.client_id  # ID tokens unchanged
    finally:
        rp.close()
    fenced = web_client(dev_server, "--scope", "openid", "--audience", "api://orders")
    access = user_access_token(dev_server, fenced, user, "openid")
    assert claims_of(access)["aud"] == ["api://orders", userinfo]

    test_token = httpx.post(
        f"{dev_server.base_url}/test-token",
        data={"client_id": both.client_id, "scope": "vault:read"},
    )
    assert claims_of(test_token.json()["access_token"])["aud"] == [both.client_id, api]


def test_every_bearer_api_answers_a_missing_token_with_a_bare_challenge(
    dev_server: LiveServer,
) -> None:
    sub = "someone"
    for method, url in (
        ("GET", connections_url(dev_server, sub)),
        ("POST", connections_url(dev_server, sub, "p") + "/token"),
        ("DELETE", connections_url(dev_server, sub, "p")),
        ("GET", f"{dev_server.base_url}/api/v1/audit/events"),
        ("GET", f"{dev_server.base_url}/userinfo"),
        ("POST", f"{dev_server.base_url}/log"),
    ):
        for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}):
            response = httpx.request(method, url, headers=headers)
            assert response.status_code == 401, (url, response.text)
            assert response.headers["www-authenticate"] == "Bearer", url
            assert response.json()["error"] == "invalid_request", url


def test_a_user_token_with_audit_read_gets_403_at_the_events_api(dev_server: LiveServer) -> None:
    app = web_client(dev_server, "--scope", "openid audit:read")
    user = new_user(dev_server)
    token = user_access_token(dev_server, app, user, "openid audit:read")
    response = httpx.get(f"{dev_server.base_url}/api/v1/audit/events", headers=bearer(token))
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "access_denied"
    assert "events" not in response.json()
    # Control: a service's own token with the same scope reads the trail.
    siem = register_client(
        dev_server, "--name", "SIEM", "--grant-type", "client_credentials", "--scope", "audit:read"
    )
    own = client_credentials_token(dev_server, siem)["access_token"]
    assert (
        httpx.get(f"{dev_server.base_url}/api/v1/audit/events", headers=bearer(own)).status_code
        == 200
    )


# --- finding 12 and bounded writes --------------------------------------------------------------


def test_userinfo_reads_and_refusals_are_audited(dev_server: LiveServer) -> None:
    app = web_client(dev_server, "--scope", "openid profile")
    user = new_user(dev_server)
    token = user_access_token(dev_server, app, user, "openid profile")
    response = httpx.get(f"{dev_server.base_url}/userinfo", headers=bearer(token))
    assert response.status_code == 200
    assert response.json()["sub"] == user.sub
    [read] = events_of(dev_server, "oauth.userinfo.read", client_id=app.client_id)
    assert read.subject == pseudonym(dev_server, user.sub)
    assert read.token_fingerprint == hashlib.sha256(token.encode()).hexdigest()[:12]
    assert read.outcome == "success"
    assert token not in json.dumps(read.details)

    # A refusal is counted in its window, whose first event names /userinfo and the reason.
    # (Imported here: the module must also load on the code before the fix, to show it fails.)
    from echo_identity.audit.events import EventType
    from echo_identity.audit.models import RefusalWindow
    from echo_identity.audit.refusals import refusal_key

    started = utcnow() - timedelta(seconds=1)
    key = refusal_key(EventType.API_ACCESS_DENIED, "127.0.0.1", "invalid_token", None)
    database = Database(dev_server.env["ECHO_DATABASE_URL"])
    # The shared server has no worker closing windows: another test's refusal from this
    # address may have opened this window. Start a fresh one, so its first event is ours.
    with database.transaction() as session:
        session.execute(delete(RefusalWindow).where(RefusalWindow.key == key))
    refused = httpx.get(f"{dev_server.base_url}/userinfo", headers=bearer("not-a-jwt"))
    assert refused.status_code == 401
    try:
        with database.session() as session:
            window = session.get(RefusalWindow, key)
    finally:
        database.dispose()
    assert window is not None
    assert window.last_seen_at >= started
    [first] = [
        e
        for e in events_of(dev_server, "api.access.denied")
        if e.details.get("aggregated", {}).get("key") == key[:16] and "repeated" not in e.details
    ][-1:]
    assert first.details["api"] == "userinfo"
    assert first.details["error"] == "invalid_token"


def test_fifty_refused_calls_per_api_add_o1_audit_rows_and_no_pseudonym(
    dev_server: LiveServer, upstream: Upstream
) -> None:
    service = vault_api_token(dev_server, vault_service_client(dev_server, upstream.name))
    events_before, pseudonyms_before = count_rows(dev_server)
    n = 50
    statuses = set()
    with httpx.Client(base_url=dev_server.base_url, timeout=10) as client:
        for _ in range(n):
            random_sub = secrets.token_hex(12)
            forged = secrets.token_urlsafe(30)
            answers = (
                client.get(f"/api/v1/users/{random_sub}/connections").status_code,
                client.post(
                    f"/api/v1/users/{random_sub}/connections/{upstream.name}/token",
                    headers=bearer(forged),
                ).status_code,
                client.get(
                    f"/api/v1/users/{random_sub}/connections", headers=bearer(service)
                ).status_code,
                client.get("/userinfo").status_code,
                client.get("/userinfo", headers=bearer(forged)).status_code,
            )
            statuses.add(answers)
    events_after, pseudonyms_after = count_rows(dev_server)
    # Five kinds of refusal, each recorded once per window (plus at most one summary of an
    # earlier window each, and whatever the development worker thread adds meanwhile).
    assert events_after - events_before <= 12, events_after - events_before
    assert pseudonyms_after == pseudonyms_before
    assert statuses == {(401, 401, 403, 401, 401)}


# --- finding 13 (min_ttl) and hostile bodies ----------------------------------------------------


@pytest.fixture
def consented_service(dev_server: LiveServer, upstream: Upstream) -> tuple[str, TestUser]:
    service = vault_service_client(dev_server, upstream.name)
    user = new_user(dev_server)
    run_connect_flow(dev_server, upstream, user)
    return vault_api_token(dev_server, service), user


def _post_raw(
    server: LiveServer, token: str, sub: str, provider: str, body: bytes
) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/api/v1/users/{sub}/connections/{provider}/token",
        headers={**bearer(token), "Content-Type": "application/json"},
        content=body,
        timeout=30,
    )


def test_min_ttl_accepts_integral_json_numbers_and_refuses_the_rest(
    dev_server: LiveServer, upstream: Upstream, consented_service: tuple[str, TestUser]
) -> None:
    token, user = consented_service
    for accepted in (693.0, 693, 0, 3600.0, 1e3):
        response = fetch_vault_token(
            dev_server, token, user.sub, upstream.name, {"min_ttl": accepted}
        )
        assert response.status_code == 200, (accepted, response.text)
    for refused in (693.5, True, False, "693", None, [693], -1, 3601, 3600.5, 1e300):
        response = fetch_vault_token(
            dev_server, token, user.sub, upstream.name, {"min_ttl": refused}
        )
        assert response.status_code == 400, (refused, response.text)
        assert response.json()["error"] == "invalid_request", refused
    for force in ("yes", 1, None):
        response = fetch_vault_token(
            dev_server, token, user.sub, upstream.name, {"force_refresh": force}
        )
        assert response.status_code == 400, (force, response.text)
    # The OpenAPI TokenRequest has no other members: an unknown one is refused, not ignored.
    extra = fetch_vault_token(dev_server, token, user.sub, upstream.name, {"min_tll": 600})
    assert (extra.status_code, extra.json()["error"]) == (400, "invalid_request")


def test_hostile_json_bodies_get_400_never_500(
    dev_server: LiveServer, upstream: Upstream, consented_service: tuple[str, TestUser]
) -> None:
    token, user = consented_service
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    answers = {
        name: _post_raw(dev_server, token, user.sub, upstream.name, body)
        for name, body in {
            "deep_array": deep,
            "deep_object": deep_object,
            "not_utf8": b'{"min_ttl": "\xff\xfe"}',
            "nul": b'{"min_ttl": 60, "x": "\\u0000"}',
            "lone_surrogate": b'{"x": "\\ud800"}',
            "nan": b'{"min_ttl": NaN}',
            "truncated": b'{"min_ttl": ',
            "array": b"[60]",
        }.items()
    }
    for name, response in answers.items():
        assert response.status_code == 400, (name, response.status_code, response.text[:200])
        assert response.json()["error"] in {"json_too_deep", "invalid_json", "invalid_request"}, (
            name
        )
        assert "Traceback" not in response.text
    assert answers["deep_array"].json()["error"] == "json_too_deep"
    # An empty body is the default request.
    assert _post_raw(dev_server, token, user.sub, upstream.name, b"").status_code == 200
