"""VaultService: fresh tokens, refresh under the lock, re-consent, revocation, access, and what
reaches the database — against a real SQLite database and a fake provider."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from echo_identity.accounts.models import User
from echo_identity.audit.models import AuditEvent
from echo_identity.crypto.kek import LocalKekProvider
from echo_identity.db import Database
from echo_identity.idp.bearer_grant import BearerGrant
from echo_identity.idp.models import OAuthClient
from echo_identity.keys.keyring import Keyring
from echo_identity.vault.errors import NeedsReauthError, UpstreamError, VaultAccessDeniedError
from echo_identity.vault.models import REFRESH_TOKEN, Connection, ConnectionConsent, Provider
from echo_identity.vault.service import VaultService
from echo_identity.vault.token_store import FreshToken
from tests.unit.vault.conftest import (
    CALLBACK,
    KEK,
    REFRESH_WINDOW,
    TOKEN_LIFETIME,
    Connected,
    FakeProvider,
    connect,
    new_user,
)

DUE = TOKEN_LIFETIME - 30  # seconds after a refresh when less than a minute is left


def stored(database: Database, connection_id: int) -> Connection:
    """The connection as committed (read in a session of its own)."""
    with database.read_session() as session:
        found = session.get(Connection, connection_id)
        assert found is not None
        session.expunge(found)
        return found


def stored_refresh_token(database: Database, connection_id: int) -> str:
    with database.read_session() as session:
        found = session.get(Connection, connection_id)
        assert found is not None
        assert found.refresh_token_ciphertext is not None
        keyring = Keyring(session, LocalKekProvider([KEK]))
        plain = keyring.decrypt(found.refresh_token_ciphertext, REFRESH_TOKEN.context_for(found.id))
        return plain.decode()


def events(database: Database, event_type: str) -> list[AuditEvent]:
    with database.read_session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.event_type == event_type)))


def fresh(connected: Connected, **options: Any) -> FreshToken:
    return connected.service.fresh_token(connected.user, connected.acme, **options)


def test_a_token_with_time_left_is_read_without_calling_the_provider(
    connected: Connected,
) -> None:
    connected.provider.requests.clear()
    connected.clock.advance(TOKEN_LIFETIME - 120)
    token = fresh(connected, min_ttl=60)
    assert token.access_token == connected.provider.issued_access_tokens[0]
    assert token.refreshed is False
    assert connected.provider.requests == []


def test_a_due_token_is_refreshed_once_and_the_rotated_refresh_token_is_stored(
    connected: Connected,
) -> None:
    provider, clock = connected.provider, connected.clock
    clock.advance(DUE)
    first = fresh(connected, min_ttl=60)
    again = fresh(connected, min_ttl=60)
    assert first.refreshed is True
    assert first.access_token == provider.issued_access_tokens[-1]
    assert again.access_token == first.access_token
    assert provider.refreshes() == 1
    rotated = provider.issued_refresh_tokens[-1]
    assert stored_refresh_token(connected.database, connected.connection.id) == rotated
    assert rotated in provider.live_refresh_tokens
    after = stored(connected.database, connected.connection.id)
    assert after.expires_at == clock.now + timedelta(seconds=TOKEN_LIFETIME)
    assert after.refresh_due_at == after.expires_at - REFRESH_WINDOW
    assert after.scope == "repo read:user"


def test_a_rotated_refresh_token_is_kept_even_when_the_rest_of_the_request_fails(
    connected: Connected,
) -> None:
    connected.clock.advance(DUE)
    fresh(connected)
    connected.session.rollback()  # e.g. the view's audit event fails to commit
    # The provider killed the old refresh token; the vault holds the new one.
    newest = connected.provider.issued_refresh_tokens[-1]
    assert stored_refresh_token(connected.database, connected.connection.id) == newest
    assert len(events(connected.database, "vault.token.refreshed")) == 1


def test_a_provider_that_does_not_rotate_leaves_the_stored_refresh_token_alone(
    connected: Connected,
) -> None:
    connected.provider.rotate = False
    original = connected.provider.issued_refresh_tokens[0]
    connected.clock.advance(1)
    assert fresh(connected, force=True).refreshed is True
    assert stored_refresh_token(connected.database, connected.connection.id) == original


def test_invalid_grant_marks_the_connection_for_re_consent_and_stops_calling_the_provider(
    connected: Connected,
) -> None:
    provider, database = connected.provider, connected.database
    provider.live_refresh_tokens.clear()  # the user withdrew the grant at the provider
    connected.clock.advance(1)
    with pytest.raises(NeedsReauthError):
        fresh(connected, force=True)
    connected.session.rollback()  # the refusal's answer rolls the request back: this stays
    assert stored(database, connected.connection.id).status == "needs_reauth"
    failures = events(database, "vault.token.refresh_failed")
    assert [(f.severity, f.details["error"]) for f in failures] == [("high", "invalid_grant")]
    calls = provider.refreshes()
    with pytest.raises(NeedsReauthError):
        fresh(connected, force=True)
    assert provider.refreshes() == calls


def test_a_provider_outage_keeps_a_still_valid_token_and_counts_the_failure(
    connected: Connected,
) -> None:
    connected.provider.outage = True
    connected.clock.advance(DUE)
    token = fresh(connected, min_ttl=60)
    assert token.access_token == connected.provider.issued_access_tokens[0]
    assert token.refreshed is False
    assert stored(connected.database, connected.connection.id).refresh_failures == 1
    failures = events(connected.database, "vault.token.refresh_failed")
    assert [f.details["error"] for f in failures] == ["upstream_unavailable"]


def test_a_provider_outage_after_expiry_is_an_upstream_error(connected: Connected) -> None:
    connected.provider.outage = True
    connected.clock.advance(TOKEN_LIFETIME + 1)
    with pytest.raises(UpstreamError):
        fresh(connected)


def test_a_refresh_by_someone_else_meanwhile_is_handed_out_without_a_second_refresh(
    connected: Connected,
) -> None:
    connected.clock.advance(DUE)
    # The first caller read the row (still expiring) before another process refreshed it.
    connected.service.require_connection(connected.user.id, connected.acme)
    connected.session.commit()  # (on SQLite its transaction would hold the write lock)
    with connected.database.session() as elsewhere:
        user = elsewhere.get(User, connected.user.id)
        acme = elsewhere.get(Provider, connected.acme.id)
        assert user is not None
        assert acme is not None
        refreshed = connected.vault.service(elsewhere).fresh_token(user, acme)
    assert fresh(connected).access_token == refreshed.access_token
    assert connected.provider.refreshes() == 1


def test_connect_sends_the_pkce_verifier_of_the_challenge_it_asked_for(
    service: VaultService, user: User, acme: Provider, provider: FakeProvider, session: Session
) -> None:
    url = service.authorization_url(acme, "the-state", CALLBACK)
    query = parse_qs(urlsplit(url).query)
    connect(service, session, user, acme)
    [exchange] = provider.calls("/token", "authorization_code")
    assert create_s256_code_challenge(exchange["code_verifier"]) == query["code_challenge"][0]
    assert exchange["redirect_uri"] == CALLBACK


def test_connect_writes_nothing_until_the_caller_commits(
    database: Database, service: VaultService, session: Session, user: User, acme: Provider
) -> None:
    service.complete_connect(user, acme, "the-code", "the-state", CALLBACK)
    session.rollback()
    with database.read_session() as other:
        assert other.scalars(select(Connection)).all() == []
        assert other.scalars(select(ConnectionConsent)).all() == []
    assert events(database, "vault.connection.created") == []


def test_disconnect_revokes_both_tokens_at_the_rfc7009_endpoint_then_deletes(
    connected: Connected,
) -> None:
    provider, database = connected.provider, connected.database
    connected.service.disconnect(connected.user, connected.acme)
    connected.session.commit()
    revoked = [(form["token"], form["token_type_hint"]) for form in provider.calls("/revoke")]
    assert revoked == [
        (provider.issued_refresh_tokens[0], "refresh_token"),
        (provider.issued_access_tokens[0], "access_token"),
    ]
    with database.read_session() as other:
        assert other.get(Connection, connected.connection.id) is None
        consents = other.scalars(select(ConnectionConsent)).all()
        assert [consent.withdrawn_at is not None for consent in consents] == [True]
    assert len(events(database, "vault.connection.revoked")) == 1


def test_a_refused_revocation_deletes_nothing(connected: Connected) -> None:
    connected.provider.revocation_status = 400
    with pytest.raises(UpstreamError):
        connected.service.disconnect(connected.user, connected.acme)
    connected.session.rollback()
    kept = stored(connected.database, connected.connection.id)
    assert kept.access_token_ciphertext is not None


def _client(session: Session, client_id: str, providers: list[str]) -> None:
    session.add(
        OAuthClient(
            client_id=client_id,
            name=client_id,
            token_endpoint_auth_method="client_secret_basic",
            vault_providers=providers,
        )
    )
    session.commit()


def _own_token(client_id: str) -> BearerGrant:
    """A client-credentials token of ``client_id`` (its ``sub`` is the client)."""
    return BearerGrant("token", {"sub": client_id, "client_id": client_id}, None)


def test_a_client_credentials_caller_without_the_users_consent_is_refused(
    connected: Connected,
) -> None:
    access, sub = connected.service.access, connected.user.sub
    _client(connected.session, "backend", ["acme"])  # named on the consent page accepted
    _client(connected.session, "stranger", ["acme"])  # registered for acme, not consented to
    assert access.target(_own_token("backend"), sub, "acme").id == connected.user.id
    with pytest.raises(VaultAccessDeniedError):
        access.target(_own_token("stranger"), sub, "acme")
    with pytest.raises(VaultAccessDeniedError):  # an unknown user: the same answer
        access.target(_own_token("backend"), "no-such-user", "acme")


def test_a_token_issued_to_a_user_reaches_only_that_users_connections(
    database: Database, session: Session, service: VaultService, user: User
) -> None:
    _client(session, "app", ["acme"])
    other = new_user(database, session)
    grant = BearerGrant("token", {"sub": user.sub, "client_id": "app"}, user)
    assert service.access.target(grant, user.sub, "acme") is user
    with pytest.raises(VaultAccessDeniedError):
        service.access.target(grant, other.sub, "acme")
    with pytest.raises(VaultAccessDeniedError):  # the client is not registered for it
        service.access.target(grant, user.sub, "other-provider")


def test_no_token_or_client_secret_is_stored_in_clear(connected: Connected) -> None:
    connected.clock.advance(DUE)
    fresh(connected)
    provider = connected.provider
    secrets = [
        *provider.issued_access_tokens,
        *provider.issued_refresh_tokens,
        "acme-client-secret-Wx4",
    ]
    assert len(secrets) == 5
    dump = _every_stored_value(connected.database)
    found = [secret for secret in secrets if any(secret.encode() in value for value in dump)]
    assert found == []


def _every_stored_value(database: Database) -> list[bytes]:
    values: list[bytes] = []
    with database.engine.connect() as connection:
        connection.execution_options(sqlite_begin="DEFERRED")
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                values += [_as_bytes(value) for value in row if value is not None]
    return values


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
