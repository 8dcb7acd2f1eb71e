"""Connect flow, fresh-token API, refresh, disconnect — against a real upstream provider."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import MetaData, select, update

from echo_identity.audit.alert_models import Alert
from echo_identity.audit.detection import SETTLE, DetectionPolicy, run_detection
from echo_identity.audit.models import AuditEvent
from echo_identity.audit.pseudonyms import Pseudonyms
from echo_identity.db import Database, utcnow
from echo_identity.idp.models import TokenFamily
from echo_identity.vault.models import Connection, ConnectionConsent
from tests.factories import TestUser, create_user
from tests.support.environment import settings_for
from tests.support.server import LiveServer
from tests.support.vault import (
    Upstream,
    fetch_vault_token,
    run_connect_flow,
    vault_api_token,
    vault_service_client,
)


def _expire_soon(database: Database, user: TestUser, seconds: int = 10) -> None:
    with database.transaction() as session:
        session.execute(
            update(Connection)
            .where(Connection.user_id == user.id)
            .values(expires_at=utcnow() + timedelta(seconds=seconds))
        )


def test_connect_flow_stores_encrypted_tokens_and_records_consent(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    browser, _ = run_connect_flow(dev_server, upstream, user)
    page = browser.get("/account/connections")
    assert upstream.name in page.text
    assert 'name="disconnect"' in page.text
    with database.session() as session:
        connection = session.scalar(select(Connection).where(Connection.user_id == user.id))
        consent = session.scalar(
            select(ConnectionConsent).where(ConnectionConsent.user_id == user.id)
        )
    assert connection is not None
    assert connection.status == "active"
    assert connection.refresh_token_ciphertext is not None
    assert connection.expires_at is not None
    assert consent is not None
    assert consent.provider_name == upstream.name
    assert consent.consent_text_version


def test_service_fetches_a_token_that_the_upstream_accepts(
    dev_server: LiveServer, upstream: Upstream, user: TestUser
) -> None:
    service = vault_service_client(dev_server, upstream.name)  # before the user consents
    run_connect_flow(dev_server, upstream, user)
    bearer = vault_api_token(dev_server, service)
    response = fetch_vault_token(dev_server, bearer, user.sub, upstream.name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_at", "scope"}
    assert upstream.introspect(body["access_token"])["active"] is True


def test_twenty_concurrent_requests_on_an_expiring_connection_refresh_exactly_once(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    service = vault_service_client(dev_server, upstream.name)  # before the user consents
    run_connect_flow(dev_server, upstream, user)
    bearer = vault_api_token(dev_server, service)
    before = fetch_vault_token(dev_server, bearer, user.sub, upstream.name).json()["access_token"]
    _expire_soon(database, user)
    assert upstream.refresh_count() == 0
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(
            pool.map(
                lambda _: fetch_vault_token(dev_server, bearer, user.sub, upstream.name), range(20)
            )
        )
    assert [a.status_code for a in answers] == [200] * 20
    tokens = {a.json()["access_token"] for a in answers}
    assert len(tokens) == 1
    assert tokens != {before}
    assert upstream.refresh_count() == 1
    assert upstream.introspect(tokens.pop())["active"] is True


def test_force_refresh_rotates_the_refresh_token_and_keeps_working(
    dev_server: LiveServer, upstream: Upstream, user: TestUser
) -> None:
    service = vault_service_client(dev_server, upstream.name)  # before the user consents
    run_connect_flow(dev_server, upstream, user)
    bearer = vault_api_token(dev_server, service)
    first = fetch_vault_token(dev_server, bearer, user.sub, upstream.name, {"force_refresh": True})
    second = fetch_vault_token(dev_server, bearer, user.sub, upstream.name, {"force_refresh": True})
    assert first.status_code == second.status_code == 200
    assert first.json()["access_token"] != second.json()["access_token"]
    # The upstream rotates refresh tokens and revokes the family on reuse: two successful forced
    # refreshes prove the rotated refresh token was stored and used.
    assert upstream.refresh_count() == 2


def test_invalid_grant_marks_the_connection_needs_reauth_and_records_it(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    service = vault_service_client(dev_server, upstream.name)  # before the user consents
    run_connect_flow(dev_server, upstream, user)
    bearer = vault_api_token(dev_server, service)
    # The user withdraws the grant at the provider: the upstream revokes the token family.
    upstream_db = Database(upstream.server.env["ECHO_DATABASE_URL"])
    with upstream_db.transaction() as session:
        session.execute(
            update(TokenFamily)
            .where(TokenFamily.client_id == upstream.client.client_id)
            .values(revoked_at=utcnow(), revoked_reason="user_withdrew")
        )
    upstream_db.dispose()
    response = fetch_vault_token(
        dev_server, bearer, user.sub, upstream.name, {"force_refresh": True}
    )
    assert response.status_code == 409
    assert response.json()["error"] == "needs_reauth"
    # The user appears in the trail as a pseudonym only.
    pseudonym = Pseudonyms.from_secret(dev_server.env["ECHO_SECRET_KEY"].encode()).of(user.sub)
    with database.session() as session:
        connection = session.scalar(select(Connection).where(Connection.user_id == user.id))
        failures = session.scalars(
            select(AuditEvent).where(
                AuditEvent.event_type == "vault.token.refresh_failed",
                AuditEvent.subject == pseudonym,
            )
        ).all()
    assert connection is not None
    assert connection.status == "needs_reauth"
    assert [f.severity for f in failures] == ["high"]
    # The detection pass (the worker's, run here directly) raises a high-severity alert.
    run_detection(
        database,
        DetectionPolicy.from_settings(settings_for(dev_server.env)),
        now=utcnow() + SETTLE + timedelta(seconds=1),
    )
    with database.session() as session:
        alerts = session.scalars(
            select(Alert).where(Alert.rule == "vault_refresh_invalid_grant")
        ).all()
    assert [(a.severity, a.evidence) for a in alerts] == [("high", [failures[0].id])]
    # Later calls fail fast without bothering the provider again.
    again = fetch_vault_token(dev_server, bearer, user.sub, upstream.name)
    assert again.status_code == 409
    assert upstream.refresh_count() == 0


def test_service_not_allowed_for_the_provider_is_denied_and_audited(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    run_connect_flow(dev_server, upstream, user)
    other = vault_service_client(dev_server, "some-other-provider")
    response = fetch_vault_token(
        dev_server, vault_api_token(dev_server, other), user.sub, upstream.name
    )
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"
    with database.session() as session:
        denied = session.scalars(
            select(AuditEvent).where(
                AuditEvent.event_type == "vault.token.denied",
                AuditEvent.client_id == other.client_id,
            )
        ).all()
    assert len(denied) == 1
    assert denied[0].ip == "127.0.0.1"
    assert denied[0].request_id


def test_token_without_vault_scope_is_refused(
    dev_server: LiveServer, upstream: Upstream, user: TestUser
) -> None:
    # audit:read puts the API audience in the token, so only the scope is missing.
    weak = vault_service_client(dev_server, upstream.name, scope="audit:read")
    run_connect_flow(dev_server, upstream, user)
    response = fetch_vault_token(
        dev_server, vault_api_token(dev_server, weak), user.sub, upstream.name
    )
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="vault:read"'
    )


def test_missing_or_forged_bearer_is_refused(dev_server: LiveServer, user: TestUser) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}):
        response = httpx.post(
            f"{dev_server.base_url}/api/v1/users/{user.sub}/connections/x/token", headers=headers
        )
        assert response.status_code == 401
        assert "Traceback" not in response.text


def test_disconnect_revokes_upstream_then_deletes_locally(
    dev_server: LiveServer, upstream: Upstream, user: TestUser, database: Database
) -> None:
    service = vault_service_client(dev_server, upstream.name)  # before the user consents
    run_connect_flow(dev_server, upstream, user)
    bearer = vault_api_token(dev_server, service)
    token = fetch_vault_token(dev_server, bearer, user.sub, upstream.name).json()["access_token"]
    assert upstream.introspect(token)["active"] is True
    response = httpx.delete(
        f"{dev_server.base_url}/api/v1/users/{user.sub}/connections/{upstream.name}",
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert response.status_code == 204
    assert upstream.introspect(token) == {"active": False}
    with database.session() as session:
        assert session.scalar(select(Connection).where(Connection.user_id == user.id)) is None
    # Disconnecting also withdrew the consent: the service reaches nothing of that user now.
    gone = fetch_vault_token(dev_server, bearer, user.sub, upstream.name)
    assert (gone.status_code, gone.json()["error"]) == (403, "access_denied")


def test_no_token_provider_secret_or_kek_is_stored_in_clear(
    dev_server: LiveServer, upstream: Upstream, user: TestUser
) -> None:
    service = vault_service_client(dev_server, upstream.name)  # before the user consents
    run_connect_flow(dev_server, upstream, user)
    bearer = vault_api_token(dev_server, service)
    token = fetch_vault_token(
        dev_server, bearer, user.sub, upstream.name, {"force_refresh": True}
    ).json()
    secrets_in_play = [
        token["access_token"],
        upstream.client.client_secret or "",
        dev_server.env["ECHO_VAULT_KEK"],
    ]
    database = Database(dev_server.env["ECHO_DATABASE_URL"])
    metadata = MetaData()
    metadata.reflect(database.engine)
    stored: list[str] = []
    with database.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for value in row:
                    stored.append(
                        value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    )
    database.dispose()
    for secret in secrets_in_play:
        assert secret
        assert not [value for value in stored if secret in value]


def test_ciphertexts_swapped_between_two_rows_fail_for_both_with_a_clear_error(
    dev_server: LiveServer, upstream: Upstream, database: Database
) -> None:
    alice, bob = (
        create_user(dev_server.env["ECHO_DATABASE_URL"]),
        create_user(dev_server.env["ECHO_DATABASE_URL"]),
    )
    service = vault_service_client(dev_server, upstream.name)
    run_connect_flow(dev_server, upstream, alice)
    run_connect_flow(dev_server, upstream, bob)
    with database.transaction() as session:
        rows = {
            c.user_id: c
            for c in session.scalars(
                select(Connection).where(Connection.user_id.in_([alice.id, bob.id]))
            )
        }
        a, b = rows[alice.id], rows[bob.id]
        a.access_token_ciphertext, b.access_token_ciphertext = (
            b.access_token_ciphertext,
            a.access_token_ciphertext,
        )
    bearer = vault_api_token(dev_server, service)
    for user in (alice, bob):
        response = fetch_vault_token(dev_server, bearer, user.sub, upstream.name)
        assert response.status_code == 500
        assert response.json()["error"] == "stored_token_unreadable"
        assert "Traceback" not in response.text
